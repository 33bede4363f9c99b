"""The committed results (results/) redraw the reports the docs quote: `leap report` on a
copy of each results directory writes the committed report.md (or, for the appendix C
ablation over seeds, ablation.md and each seed's ablation.md) again, byte for byte."""

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


ABLATIONS = sorted(p.parent for p in RESULTS.glob("**/ablation.md")
                   if any((d / "ablation.json").is_file() for d in p.parent.iterdir() if d.is_dir()))


@pytest.mark.parametrize("directory", ABLATIONS, ids=[p.name for p in ABLATIONS])
def test_leap_report_redraws_the_committed_ablation_tables_over_seeds(tmp_path, directory):
    copy = shutil.copytree(directory, tmp_path / directory.name)
    tables = sorted(path.relative_to(copy) for path in copy.glob("**/ablation.md"))
    assert len(tables) > 1, "the table over seeds and one per seed"
    for table in tables:
        (copy / table).unlink()
    assert main(["report", str(copy)]) == 0
    for table in tables:
        assert (copy / table).read_text() == (directory / table).read_text(), table
