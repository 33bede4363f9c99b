"""mkdocs hook: the home page is README.md (docs/index.md includes it), whose links point
from the repository root (``docs/design.md``); on the site the page sits in docs/, so they
must read ``design.md`` there. The hook inserts the README into index.md itself, with the
links rewritten, before Markdown runs (pymdownx.snippets would include it only during the
conversion, after any hook could rewrite it). Links the site cannot resolve still fail
the strict build."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README_DOC_LINK = re.compile(r"\]\(docs/")
INCLUDE = '--8<-- "README.md"'


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    if page.file.src_uri != "index.md" or INCLUDE not in markdown:
        return markdown
    readme = Path(config.config_file_path).parent / "README.md"
    return markdown.replace(INCLUDE, README_DOC_LINK.sub("](", readme.read_text()))
