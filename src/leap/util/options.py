"""Options declared once: name, type, range, default, help and the benchmarks they apply to.

An [`Option`][leap.util.options.Option] is the single declaration of one setting. The command line is built
from it ([`Option.add_to()`][leap.util.options.Option.add_to], which also records the scope for
[`check_options_apply()`][leap.util.options.check_options_apply]), parsed values are checked against it
([`check_parsed()`][leap.util.options.check_parsed]), and a configuration read from a file or built in Python is
checked against the same object ([`check_fields()`][leap.util.options.check_fields]). A range therefore cannot differ
between the CLI and the config dataclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leap.util.errors import UsageError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def boolean(text: str) -> bool:
    """argparse type of a true/false option (``--stabilizer false``)."""
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


class comma_list:
    """argparse type of a comma-separated list, parsed once: ``comma_list(int)("1, 3")``
    is ``[1, 3]``; an item that does not parse, or no item, is argparse's one-line error.
    An [`Option`][leap.util.options.Option] of this type checks each item against its
    range and choices."""

    def __init__(self, item: Callable[[str], Any] = str) -> None:
        self.item = item
        self.__name__ = f"comma-separated {getattr(item, '__name__', 'value')}"

    def __call__(self, text: str) -> list[Any]:
        values = []
        for piece in (v.strip() for v in text.split(",")):
            if piece:
                try:
                    values.append(self.item(piece))
                except (TypeError, ValueError):
                    raise argparse.ArgumentTypeError(f"{self.__name__} values expected, got {text!r} "
                                                     f"({piece!r} is not one)") from None
        if not values:
            raise argparse.ArgumentTypeError(f"no value in {text!r}")
        return values

    def __eq__(self, other: object) -> bool:
        return isinstance(other, comma_list) and other.item is self.item

    def __hash__(self) -> int:
        return hash(("comma_list", self.item))


@dataclass(frozen=True)
class Option:
    """One setting: its field ``name`` (also the argparse dest), argparse ``type``, valid
    range (``low``/``high`` inclusive, ``above``/``below`` strict), ``choices``,
    ``default``, ``help`` and the benchmarks it ``applies_to`` (None: all).

    ``optional``: None is a valid value after defaults are resolved (a cap that may be
    absent). ``required``: the command line must give it. ``flag`` defaults to
    ``--name-with-dashes``; a flag without a leading dash is a positional argument. A ``type`` of
    [`comma_list`][leap.util.options.comma_list] makes a list option: its value is a
    non-empty list, each item within the range and choices.
    """

    name: str
    help: str = ""
    type: Callable[[str], Any] | None = None
    default: Any = None
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None
    choices: Sequence[Any] | None = None
    optional: bool = False
    applies_to: Sequence[str] | None = None
    flag: str | None = None
    action: str | None = None
    metavar: str | None = None
    required: bool = False

    @property
    def flags(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def is_list(self) -> bool:
        return isinstance(self.type, comma_list)

    @property
    def item_type(self) -> Callable[[str], Any] | None:
        return self.type.item if self.is_list else self.type

    def requirement(self) -> str:
        """What a valid value is, in words ("a positive integer", "> 0", "one of [...]")."""
        if self.is_list:
            return "a comma-separated list, each " + dataclasses.replace(self, type=self.item_type).requirement()
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        if self.type is int:
            if self.low is not None and self.high is None and self.low in (0, 1):
                return "a positive integer" if self.low == 1 else "a non-negative integer"
            bounds = [f">= {int(self.low)}"] if self.low is not None else []
            bounds += [f"<= {int(self.high)}"] if self.high is not None else []
            return "an integer" + (" " + " and ".join(bounds) if bounds else "")
        if self.type is float:
            bounds = [f"> {self.above:g}"] if self.above is not None else []
            bounds += [f">= {self.low:g}"] if self.low is not None else []
            bounds += [f"<= {self.high:g}"] if self.high is not None else []
            bounds += [f"< {self.below:g}"] if self.below is not None else []
            return " and ".join(bounds) if bounds else "a finite number"
        return "true or false" if self.type is boolean else "a string"

    def valid(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.is_list:
            item = dataclasses.replace(self, type=self.item_type)
            return isinstance(value, list) and bool(value) and all(item.valid(v) for v in value)
        if self.choices is not None:
            return value in self.choices
        if self.type is int:
            ok = _is_int(value)
        elif self.type is float:
            ok = _is_number(value)
        elif self.type is boolean or self.action == "store_true":
            return isinstance(value, bool)
        else:
            return isinstance(value, str)
        return (ok and (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
                and (self.above is None or value > self.above) and (self.below is None or value < self.below))

    def check(self, value: Any, name: str | None = None) -> None:
        """Raise ``ValueError("<name> must be <requirement>, got <value>")`` for an invalid value."""
        if not self.valid(value):
            none = " or None" if self.optional else ""
            raise ValueError(f"{name or self.name} must be {self.requirement()}{none}, got {value!r}")

    def add_to(self, parser: Any) -> argparse.Action:
        """Add the flag to an argparse parser or group, scoped by ``applies_to``."""
        kwargs: dict[str, Any] = dict(dest=self.name, default=self.default, help=self.help)
        if self.required:
            kwargs["required"] = True
        if self.action is not None:
            kwargs["action"] = self.action
        else:
            if self.type is not None:
                kwargs["type"] = self.type
            if self.choices is not None and not self.is_list:  # a list's items: check_parsed
                kwargs["choices"] = list(self.choices)
            if self.metavar is not None:
                kwargs["metavar"] = self.metavar
        if not self.flags.startswith("-"):  # a positional argument: its name is its dest, it is required
            del kwargs["dest"], kwargs["default"]
            kwargs.pop("required", None)
        action = parser.add_argument(self.flags, **kwargs)
        action.option = self  # type: ignore[attr-defined]  (check_parsed, check_options_apply)
        return action


def add_options(parser: Any, options: Iterable[Option], skip: Iterable[str] = ()) -> None:
    """Add every option (but those named in ``skip``) to ``parser``."""
    skipped = set(skip)
    for opt in options:
        if opt.name not in skipped:
            opt.add_to(parser)


def by_name(options: Iterable[Option]) -> dict[str, Option]:
    return {opt.name: opt for opt in options}


def check_fields(owner: Any, options: Mapping[str, Option], fields: Mapping[str, str] | None = None,
                 benchmark: str | None = None) -> None:
    """Check ``owner``'s attributes (or a dict's keys) against their options.

    ``fields`` maps a field to the option that declares it where the names differ
    (default: the same name, for every option that is a field of ``owner``); with a
    ``benchmark``, options that do not apply to it are not checked.
    """
    def get(name: str) -> Any:
        return owner[name] if isinstance(owner, Mapping) else getattr(owner, name)

    def has(name: str) -> bool:
        return name in owner if isinstance(owner, Mapping) else hasattr(owner, name)

    pairs = fields.items() if fields is not None else ((n, n) for n in options if has(n))
    for field_name, option_name in pairs:
        opt = options[option_name]
        if benchmark is not None and opt.applies_to is not None and benchmark not in opt.applies_to:
            continue
        opt.check(get(field_name), field_name)


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> list[tuple[str, argparse.Action]]:
    """(flag, action) of every option that appears in ``argv`` (the parser must not accept
    abbreviations, so each option is spelled out)."""
    given = []
    for token in argv:
        if token == "--":
            break
        flag = token.split("=", 1)[0]
        action = parser._option_string_actions.get(flag)
        if action is not None:
            given.append((flag, action))
    return given


def check_options_apply(parser: argparse.ArgumentParser, argv: list[str], benchmark: str) -> None:
    """Refuse an option given for a benchmark it does not apply to (its declared
    ``applies_to``), naming the option."""
    for flag, action in given_options(parser, argv):
        opt = getattr(action, "option", None)
        scope = None if opt is None else opt.applies_to
        if scope is not None and benchmark not in scope:
            raise UsageError(f"{flag} does not apply to --benchmark {benchmark} (only to {', '.join(scope)})")


def check_parsed(parser: argparse.ArgumentParser, argv: list[str], args: argparse.Namespace) -> None:
    """Check every option given in ``argv`` against its declared range; the error names
    the flag: ``--meta-steps must be a positive integer, got 0``."""
    for flag, action in given_options(parser, argv):
        opt = getattr(action, "option", None)
        if opt is None or opt.action is not None:
            continue
        try:
            opt.check(getattr(args, action.dest))
        except ValueError:
            raise UsageError(f"{flag} must be {opt.requirement()}, got {getattr(args, action.dest)!r}") from None
