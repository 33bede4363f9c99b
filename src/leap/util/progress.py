"""Progress over meta-steps: a tqdm bar on a terminal, else one line per meta-step.

A bar written to a file or a pipe (a log, CI) would fill it with carriage returns, and
``--no-progress`` asks for no bar: both get plain lines instead, so a long run still says
how far it is.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


def loss_and_error(metrics: dict[str, Any]) -> dict[str, str]:
    return {"loss": f"{metrics['train_loss']:.3f}", "err": f"{metrics['train_error']:.3f}"}


class Progress:
    """``update(metrics)`` after each meta-step; ``postfix`` picks what is shown. Nothing
    at all unless ``enabled`` (e.g. on torchrun's other ranks); a bar when ``bar`` is
    wanted and stderr is a terminal; else a line per meta-step, or every ``every`` steps."""

    def __init__(self, total: int, desc: str, enabled: bool,
                 postfix: Callable[[dict[str, Any]], dict[str, str]] = loss_and_error, bar: bool = True,
                 every: int = 1) -> None:
        self.bar = None
        self.total, self.desc, self.enabled, self.n, self.postfix = total, desc, enabled, 0, postfix
        self.every, self.start = max(1, every), time.perf_counter()
        if enabled and bar and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                pass

    def write(self, message: str) -> None:
        """A line that does not break the bar (nothing unless enabled)."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        elif self.enabled:
            print(message, file=sys.stderr, flush=True)

    def update(self, metrics: dict[str, Any]) -> None:
        """After a meta-step; a record's ``step`` sets the position, so a resumed run's bar
        continues from its checkpoint instead of restarting at 0."""
        done = int(metrics.get("step", self.n + 1))
        advance, self.n = done - self.n, done
        if self.bar is not None:
            self.bar.set_postfix(**self.postfix(metrics))
            self.bar.update(advance)
        elif self.enabled and (self.n == self.total or self.n % self.every == 0):
            shown = "".join(f" {k} {v}" for k, v in self.postfix(metrics).items())
            self.write(f"{self.desc}: {self.n}/{self.total}{shown} ({time.perf_counter() - self.start:.0f} s)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TaskProgress:
    """Progress over the tasks of an evaluation: ``update(done, total)`` as tasks finish
    (the total is known once the tasks are listed, so the bar starts at the first call)."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:  # as lines: every 10% of the tasks
            self.bar = Progress(total, self.desc, self.enabled, postfix=lambda _: {}, every=total // 10)
        self.bar.update({"step": done})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
