"""mkdocs hook: the home page is README.md (included by docs/index.md), whose links point
from the repository root (``docs/design.md``); on the site the page sits in docs/, so they
are rewritten to ``design.md`` there. Links the site cannot resolve still fail the strict
build."""

from __future__ import annotations

import re
from typing import Any

README_DOC_LINK = re.compile(r"\]\(docs/")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri == "index.md":
        return README_DOC_LINK.sub("](", markdown)
    return markdown
