"""Derived random streams.

Every task of every meta-step gets its own generator, seeded from (run seed, purpose,
meta-step, index). Consequences: a task's data does not depend on the order in which
tasks are trained (so sequential, batched and distributed execution see the same
minibatches), and resuming at meta-step s needs no RNG state beyond s itself.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any sequence of printable parts (stable across runs and machines)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def derived_generator(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(*parts))
    return generator
