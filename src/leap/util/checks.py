"""The one validation helper: values checked once, with messages that name the value.

Every check raises ``ValueError("<name> must be ..., got <value>")``; the command line
turns it into one line and exit status 2 ([`leap.util.errors`][leap.util.errors]).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_ints(owner: Any, names: Iterable[str], *, optional: bool = False) -> None:
    """``owner.<name>`` is an integer >= 1 for every name (or None when ``optional``)."""
    for name in names:
        positive_int(name, getattr(owner, name), optional=optional)


def positive_int(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, got {value!r}")




def positive_number(name: str, value: Any) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")



def dataclass_from_dict(cls: type[T], values: dict[str, Any], what: str = "config") -> T:
    """``cls(**values)`` for a dataclass, refusing keys it does not have (a file written by
    another version or another experiment) with one message that lists them."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} key(s) {unknown}")
    return cls(**values)
