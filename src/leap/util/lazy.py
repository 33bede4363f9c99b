"""Packages that re-export their modules' names without importing those modules up front.

A package's ``__init__`` runs whenever any of its modules is imported, so an ``__init__``
that imports its torch modules makes a torch-free module of the package (the
declarations the command line is built from) cost seconds of imports. Such a package
names where each re-exported name lives and imports that module on first use (PEP 562);
its names stay importable from the package (``from leap.engine import train_task``), and
static tools read them from an ``if TYPE_CHECKING:`` import block beside ``__all__``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_attributes(package: str, homes: Mapping[str, Iterable[str]]) -> tuple[Callable[[str], Any],
                                                                               Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package`` (PEP 562):
    ``homes`` maps each module to the names the package re-exports from it; a name's
    module is imported when the name is first looked up, and the value is then kept in
    the package (later lookups are ordinary attribute reads)."""
    home_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home_of})

    return __getattr__, __dir__
