"""The API site renders the docstrings as Markdown (mkdocstrings): a reST role such as
:class:`X` would print literally, so none may appear (cross-references are [`X`][leap.path.X])."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLE = re.compile(r":(class|meth|func|mod|data|attr|exc|obj):`")


def test_no_restructuredtext_role_is_left_in_the_docstrings_or_the_docs():
    found = [f"{path.relative_to(ROOT)}:{number}" for path in [*ROOT.glob("src/leap/**/*.py"), *ROOT.glob("docs/*.md")]
             for number, line in enumerate(path.read_text().splitlines(), 1) if ROLE.search(line)]
    assert not found, f"reST roles print literally on the API site: {found[:10]}"
