"""Character-level language modelling on text that ships with Python: a task family that
needs no download and long learning processes (hundreds to thousands of steps).

A task is one package of the running Python's standard library (``asyncio``, ``email``,
``json``, ...): the bytes of its ``.py`` files (test folders left out) in sorted path order.
Its first 90% is the training text, the rest the test text; the model predicts every next
byte (vocabulary: the 256 byte values). The packages are a fixed list (`PACKAGES`: those of
Python 3.11 with at least 40 KB of source that every later version and every distribution's
base install still has), split into pretraining, validation and held-out packages by a
seeded permutation, so the split is the same on every Python; the texts themselves are
that Python's (recorded in each task's ``meta``: the package's size and the Python version).

Shapes: a training minibatch is ``x`` (B, T) and ``y`` (B, T) int64, ``y`` the text
shifted by one byte, windows drawn uniformly with replacement; the test set is
``TEST_WINDOWS`` non-overlapping windows of the test text, spread evenly over it.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from leap.models import CharTransformer
from leap.tasks.base import Task

FAMILY_SEED = 20190506
#: Python 3.11's packages with at least 40 KB of source, less those later versions removed
#: (distutils, lib2to3) and those distributions ship apart (tkinter, idlelib, turtledemo).
PACKAGES = ("asyncio", "collections", "concurrent", "ctypes", "email", "encodings", "html", "http", "importlib",
            "json", "logging", "multiprocessing", "pydoc_data", "re", "unittest", "urllib", "wsgiref", "xml",
            "xmlrpc")
SKIPPED = ("test", "tests", "idle_test", "__pycache__")  # folders of tests, not of the package's own code
SPLIT_SIZES = {"test": 5, "val": 2}  # the rest (12) pretrains
TEST_FRACTION = 0.1
TEST_WINDOWS = 32
VOCAB = 256


def stdlib_packages(root: str | Path | None = None) -> dict[str, int]:
    """{package: bytes of its .py source} for `PACKAGES` in the standard library at ``root``
    (default: this Python's); raises ``FileNotFoundError`` naming a missing one."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    missing = [name for name in PACKAGES if not (root / name / "__init__.py").is_file()]
    if missing:
        raise FileNotFoundError(f"the standard library at {root} lacks the package(s) {missing} of the charlm tasks")
    return {name: sum(p.stat().st_size for p in package_files(root / name)) for name in PACKAGES}


def package_files(package: Path) -> list[Path]:
    """The package's .py files in sorted path order, test folders left out."""
    found = []
    for folder, subfolders, files in os.walk(package):
        subfolders[:] = sorted(s for s in subfolders if s not in SKIPPED)
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(found)


def split_packages(names: list[str], seed: int = FAMILY_SEED) -> dict[str, list[str]]:
    """{"train", "val", "test"}: the sorted names permuted by ``seed``; the first
    ``SPLIT_SIZES["test"]`` are held out, the next ``SPLIT_SIZES["val"]`` validate."""
    order = [sorted(names)[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n_test, n_val = SPLIT_SIZES["test"], SPLIT_SIZES["val"]
    if len(order) < n_test + n_val + 1:
        raise ValueError(f"{len(order)} packages cannot be split into {n_test} held-out, {n_val} validation "
                         "and at least one pretraining package")
    return {"test": order[:n_test], "val": order[n_test: n_test + n_val], "train": order[n_test + n_val:]}


@dataclass
class TextTask(Task):
    """A task whose training set is one text: ``train_x`` (N,) uint8 bytes (``train_y`` the
    same tensor); ``context`` T bytes per window. ``test_x``/``test_y`` (M, T) int64 as any
    task's."""

    context: int = 128

    def draw_index(self, batch_size: int, generator: torch.Generator, test: bool = False) -> Tensor:
        """Window starts (batch_size,) in the training text, or test rows with ``test``."""
        if test:
            return super().draw_index(batch_size, generator, test=True)
        starts = len(self.train_x) - self.context - 1
        return torch.randint(starts + 1, (batch_size,), generator=generator, device=generator.device)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        start = self.draw_index(batch_size, generator).to(self.train_x.device)
        window = self.train_x[start[:, None] + torch.arange(self.context + 1, device=start.device)].long()
        return window[:, :-1], window[:, 1:]

    def to(self, device: torch.device | str) -> TextTask:
        text = self.train_x.to(device)
        return TextTask(self.name, text, text, self.test_x.to(device), self.test_y.to(device), self.num_classes,
                        None, self.source, dict(self.meta), self.context)


def text_task(name: str, text: bytes, source: int, context: int, meta: dict) -> TextTask:
    """The task of one package's text: its first 90% to train on, test windows from the rest."""
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8)
    cut = int(len(data) * (1 - TEST_FRACTION))
    train, test = data[:cut].clone(), data[cut:]
    windows = (len(test) - 1) // context
    if windows < 1 or len(train) <= context + 1:
        raise ValueError(f"package {name} is too short for windows of {context} bytes")
    rows = np.linspace(0, windows - 1, min(windows, TEST_WINDOWS)).round().astype(np.int64)
    starts = torch.from_numpy(rows) * context
    index = starts[:, None] + torch.arange(context + 1)
    test_windows = test[index].long()
    return TextTask(name, train, train, test_windows[:, :-1], test_windows[:, 1:], VOCAB, None, source, meta, context)


class StdlibTextBenchmark:
    """Next-byte prediction on the standard library's packages (see the module docstring)
    with a small decoder-only transformer (`CharTransformer`: 2 layers, width 128)."""

    name = "charlm"
    num_classes = VOCAB

    def __init__(self, device: torch.device | str = "cpu", context: int = 128, width: int = 128,
                 layers: int = 2, heads: int = 4, root: str | Path | None = None) -> None:
        self.device = torch.device(device)
        self.context, self.width, self.layers, self.heads = context, width, layers, heads
        self.root = Path(root or sysconfig.get_paths()["stdlib"])
        self.splits = split_packages(list(stdlib_packages(self.root)))
        self._cache: dict[tuple[str, int], TextTask] = {}

    def make_model(self) -> nn.Module:
        return CharTransformer(VOCAB, self.width, self.layers, self.heads, self.context).to(self.device)

    def num_sources(self, split: str) -> int:
        return len(self._split(split))

    def task(self, split: str, source: int, generator: torch.Generator | None = None, task_seed: int = 0) -> Task:
        """Package ``source`` of ``split``; its text is fixed (generator and seed are not used)."""
        names = self._split(split)
        if not 0 <= source < len(names):
            raise ValueError(f"source must be in [0, {len(names)}) for split {split!r}, got {source}")
        key = (split, source)
        if key not in self._cache:
            name = names[source]
            text = b"".join(p.read_bytes() for p in package_files(self.root / name))
            meta = {"package": name, "bytes": len(text), "python": sys.version.split()[0]}
            self._cache[key] = text_task(f"{split}-{name}", text, source, self.context, meta).to(self.device)
        return self._cache[key]

    def _split(self, split: str) -> list[str]:
        if split not in self.splits:
            raise ValueError(f"split must be one of {sorted(self.splits)}, got {split!r}")
        return self.splits[split]
