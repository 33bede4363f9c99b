"""Splits for a run (train, validation, test; caps; normalization) and the pool (MultiCV)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from leap.tasks.multicv.datasets import discover_datasets, load_dataset, resolve_data_dir
from leap.tasks.multicv.images import TEST_ONLY_FRACTION, ImageSet, display_name
from leap.util.seeding import derive_seed


# ---------------------------------------------------------------------- splits for a run
def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): ``round(fraction * n_c)`` of every class c held out,
    chosen by a permutation seeded with ``seed``; both sorted."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        held.append(rng.permutation(idx)[: round(fraction * len(idx))])
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), out)
    return kept, out


@dataclass
class DatasetSplits:
    """One dataset prepared for a run, on a device.

    ``*_x`` (N, C, 32, 32) uint8 (C = 1 or 3), ``*_y`` (N,) int64; ``mean``/``std`` (C,)
    float in [0, 1] units, of the whole training split. `inputs()` turns images into
    normalized float (B, 3, 32, 32). ``notes`` say how the splits were made (for reports).
    """

    name: str
    num_classes: int
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    mean: Tensor
    std: Tensor
    notes: list[str] = field(default_factory=list)

    def inputs(self, x: Tensor) -> Tensor:
        """uint8 (B, C, 32, 32) -> normalized float32 (B, 3, 32, 32) (grayscale replicated)."""
        out = (x.float().div_(255) - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        return out.expand(-1, 3, -1, -1) if out.shape[1] == 1 else out

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def make_splits(data: ImageSet, *, val_size: int | None = None, sample_cap: int | None = None,
                test_cap: int | None = None, device: torch.device | str = "cpu") -> DatasetSplits:
    """Train / validation / test of ``data`` for a run.

    - No training split: 80/20 per class, seeded by the dataset's name only (every run
      and method sees the same split).
    - Validation: ``val_size`` images (default: 10% of the training split) drawn with a
      seeded permutation of the training split; training keeps the rest, the first
      ``sample_cap`` of that permutation when capped. ``test_cap`` likewise caps the test set.
    - Normalization: per channel, over the whole training split (before any cap).
    """
    notes: list[str] = []
    if data.train_x is None or data.train_y is None:
        kept, held = stratified_split(data.test_y, TEST_ONLY_FRACTION, derive_seed("multicv-split", data.name))
        train_x, train_y = data.test_x[kept], data.test_y[kept]
        test_x, test_y = data.test_x[held], data.test_y[held]
        notes.append(f"{display_name(data.name)}: no training split available; its {len(data.test_y):,} images "
                     f"were split per class into {len(kept):,} train / {len(held):,} test (fixed seed)")
    else:
        train_x, train_y, test_x, test_y = data.train_x, data.train_y, data.test_x, data.test_y
    mean, std = channel_stats(train_x)
    rng = np.random.default_rng(derive_seed("multicv-subsets", data.name))
    order = rng.permutation(len(train_y))
    n_val = round(0.1 * len(train_y)) if val_size is None else int(val_size)
    if not 0 < n_val < len(train_y):
        raise ValueError(f"{data.name}: val_size={n_val} must be in [1, {len(train_y)}) (the training split)")
    val_idx, train_idx = np.sort(order[:n_val]), order[n_val:]
    if sample_cap is not None and sample_cap < len(train_idx):
        train_idx = train_idx[:sample_cap]
        notes.append(f"{display_name(data.name)}: training set capped at {sample_cap:,} images")
    train_idx = np.sort(train_idx)
    if test_cap is not None and test_cap < len(test_y):
        test_idx = np.sort(np.random.default_rng(derive_seed("multicv-test", data.name)).permutation(len(test_y))
                           [:test_cap])
        test_x, test_y = test_x[test_idx], test_y[test_idx]
        notes.append(f"{display_name(data.name)}: test set capped at {test_cap:,} images")

    def t(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return DatasetSplits(
        name=data.name, num_classes=len(data.classes),
        train_x=t(train_x[train_idx]), train_y=t(train_y[train_idx]), val_x=t(train_x[val_idx]),
        val_y=t(train_y[val_idx]), test_x=t(test_x), test_y=t(test_y),
        mean=torch.tensor(mean, dtype=torch.float32, device=device),
        std=torch.tensor(std, dtype=torch.float32, device=device), notes=notes,
    )


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), in [0, 1]
    units, exactly, from a 256-bin histogram per channel (no float copy of the data)."""
    values = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].reshape(-1), minlength=256).astype(np.float64)
        p = counts / counts.sum()
        m = float(p @ values)
        means.append(m)
        stds.append(max(float(p @ (values - m) ** 2), 1e-12) ** 0.5)
    return np.asarray(means), np.asarray(stds)


def leave_one_out(names: Iterable[str], held_out: str) -> list[str]:
    """The pretraining pool for ``held_out``: every other name (order kept)."""
    names = list(names)
    if held_out not in names:
        raise ValueError(f"held-out dataset {held_out!r} is not in the pool {names}")
    pool = [n for n in names if n != held_out]
    if not pool:
        raise ValueError(f"the pool {names} has no dataset besides the held-out {held_out!r}")
    return pool


class MultiCV:
    """The datasets of a data directory, loaded on first use and kept in memory.

    ``datasets`` chooses the pool (default: everything the directory holds); the
    other arguments go to [`make_splits()`][leap.tasks.multicv.splits.make_splits].
    """

    name = "multicv"

    def __init__(self, data_dir: str | os.PathLike | None = None, datasets: Iterable[str] | None = None,
                 cache_dir: str | os.PathLike | None = None, val_size: int | None = None,
                 sample_cap: int | None = None, test_cap: int | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.data_dir = resolve_data_dir(data_dir)
        refused: dict[str, str] = {}
        self.sources = discover_datasets(self.data_dir, refused)
        if not self.sources:
            raise FileNotFoundError(f"{self.data_dir}: no dataset of a known layout (IDX, ImageFolder, GTSRB, "
                                    "CIFAR binary, SVHN)")
        wanted = list(self.sources) if datasets is None else list(datasets)
        unknown = [n for n in wanted if n not in self.sources]
        if unknown:
            reasons = "".join(f"; {refused[n]}" for n in unknown if n in refused)
            raise ValueError(f"dataset(s) {unknown} not found in {self.data_dir}; it holds {list(self.sources)}"
                             + reasons)
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"datasets listed twice in {wanted}")
        self.names = wanted
        self.cache_dir = cache_dir
        self.split_args = dict(val_size=val_size, sample_cap=sample_cap, test_cap=test_cap, device=device)
        self._loaded: dict[str, DatasetSplits] = {}

    def pool(self, held_out: str) -> list[str]:
        return leave_one_out(self.names, held_out)

    def get(self, name: str) -> DatasetSplits:
        if name not in self.names:
            raise ValueError(f"dataset {name!r} is not in the pool {self.names}")
        if name not in self._loaded:
            self._loaded[name] = make_splits(load_dataset(self.sources[name], self.cache_dir), **self.split_args)
        return self._loaded[name]
