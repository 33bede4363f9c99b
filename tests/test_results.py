"""The committed results (results/) redraw the reports the docs quote: `leap report` on a
copy of each results directory writes the committed report.md again, byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from leap.cli import main

RESULTS = Path(__file__).resolve().parents[1] / "results"
REPORTS = sorted(p.parent for p in RESULTS.glob("*/report.md"))


@pytest.mark.parametrize("directory", REPORTS, ids=[p.name for p in REPORTS])
def test_leap_report_redraws_the_committed_report_from_the_committed_result_files(tmp_path, directory):
    copy = shutil.copytree(directory, tmp_path / directory.name)
    (copy / "report.md").unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.md").read_text() == (directory / "report.md").read_text()
