"""The Jacobian study's protocol: what is measured, on which data, at which steps."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from leap.util.options import Option, by_name, check_fields

#: ``leap jacobian``'s line in ``leap --help``.
HELP = "appendix B: precision of Leap's identity approximation of the Jacobian (Figure 5)"

#: The protocol's options, declared once (``leap jacobian`` builds its flags from them and
#: `JacobianProtocol.validate()` checks the same ranges).
PROTOCOL_OPTIONS = (
    Option("steps", "SGD steps K", int, default=20, low=1),
    Option("every", "report ρ at step 1 and every M steps", int, default=5, low=1),
    Option("tasks", "tasks (first N alphabets of --split)", int, default=5, low=1),
    Option("split", "the alphabets' split", default="train", choices=("train", "val", "test")),
    Option("batch", "minibatch size", int, default=20, low=1),
    Option("seed", "seed of the tasks and minibatches", int, default=0, low=0, high=2**63 - 1),
    Option("filters", "ConvNet filters (64 is the paper's model)", int, default=64, low=1),
)
PROTOCOL_FIELDS = by_name(PROTOCOL_OPTIONS)


@dataclass
class JacobianProtocol:
    """What a study measures; two studies with equal protocols give the same numbers."""

    data: str = "omniglot"  # "omniglot" or "synthetic"
    steps: int = 20
    every: int = 5
    lrs: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.5])
    tasks: int = 5
    split: str = "train"
    batch: int = 20
    seed: int = 0
    filters: int = 64

    def validate(self) -> None:
        check_fields(self, PROTOCOL_FIELDS)
        if not self.lrs or any(not (lr >= 0 and math.isfinite(lr)) for lr in self.lrs):
            raise ValueError(f"lrs must be finite and >= 0, got {self.lrs}")
        if self.data not in ("omniglot", "synthetic"):
            raise ValueError(f"data must be 'omniglot' or 'synthetic', got {self.data!r}")

    def identity(self) -> dict[str, Any]:
        """The fields that fix each (task, lr) measurement; ``tasks``, ``lrs`` and
        ``every`` only choose which measurements a study holds and reports, so a study
        can be extended (or cut) without redoing what it measured."""
        values = asdict(self)
        for key in ("tasks", "lrs", "every"):
            values.pop(key)
        return values

    def reported_steps(self) -> list[int]:
        """Step 1 and every ``every``-th step up to ``steps`` (the table's columns)."""
        return sorted({1, *range(self.every, self.steps + 1, self.every)})
