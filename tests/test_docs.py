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


def test_the_readme_names_every_docs_page_by_a_link_that_resolves():
    # The README is also the site's home page (docs/index.md includes it; the hook
    # tools/mkdocs_readme_links.py rewrites "docs/X.md" for it): a page named as bare text
    # would render as plain text there, a link to a missing page would be dead on both.
    text = (ROOT / "README.md").read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    bare = re.findall(r"(?<!\[)(?<!\()\bdocs/[a-z]+\.md", prose)
    assert not bare, f"docs pages named without a link: {bare}"
    targets = re.findall(r"\]\((docs/[^)#]+)", prose)
    assert targets, "the README links no docs page"
    missing = [t for t in targets if not (ROOT / t).is_file()]
    assert not missing, f"links to missing pages: {missing}"
