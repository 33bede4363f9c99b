"""Progress over meta-steps: a tqdm bar when available and wanted, else a line every 10%."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def loss_and_error(metrics: dict[str, Any]) -> dict[str, str]:
    return {"loss": f"{metrics['train_loss']:.3f}", "err": f"{metrics['train_error']:.3f}"}


class Progress:
    """``update(metrics)`` after each meta-step; ``postfix`` picks what the bar shows."""

    def __init__(self, total: int, desc: str, enabled: bool,
                 postfix: Callable[[dict[str, Any]], dict[str, str]] = loss_and_error) -> None:
        self.bar = None
        self.total, self.desc, self.enabled, self.n, self.postfix = total, desc, enabled, 0, postfix
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                pass

    def write(self, message: str) -> None:
        """A line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def update(self, metrics: dict[str, Any]) -> None:
        """After a meta-step; a record's ``step`` sets the position, so a resumed run's bar
        continues from its checkpoint instead of restarting at 0."""
        done = int(metrics.get("step", self.n + 1))
        advance, self.n = done - self.n, done
        if self.bar is not None:
            self.bar.set_postfix(**self.postfix(metrics))
            self.bar.update(advance)
        elif self.enabled and (self.n == self.total or self.n % max(1, self.total // 10) == 0):
            shown = " ".join(f"{k} {v}" for k, v in self.postfix(metrics).items())
            print(f"{self.desc}: {self.n}/{self.total} {shown}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TaskProgress:
    """Progress over the tasks of an evaluation: ``update(done, total)`` as tasks finish
    (the total is known once the tasks are listed, so the bar starts at the first call)."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = Progress(total, self.desc, self.enabled, postfix=lambda _: {})
        self.bar.update({"step": done})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
