"""Multi-CV's datasets as decoded arrays: names, the common image format (ImageSet)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leap.util.errors import CorruptFileError

IMAGE_SIZE = 32
CACHE_FORMAT = "multicv-v1-32px-pad28-bilinear"
ENV_VAR = "LEAP_MULTICV_DIR"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TEST_ONLY_FRACTION = 0.2  # share of a test-only dataset held out as its test split
IDX_IMAGES, IDX_LABELS = 2051, 2049

# How reports name the datasets (the paper's Table 4 rows).
DISPLAY_NAMES = {
    "mnist": "MNIST", "fashion-mnist": "Fashion MNIST", "notmnist": "NotMNIST", "cifar10": "Cifar10",
    "cifar100": "Cifar100", "svhn": "SVHN", "gtsrb": "Traffic Signs", "facescrub": "Facescrub",
}
PAPER_DATASETS = tuple(DISPLAY_NAMES)


def display_name(name: str) -> str:
    return DISPLAY_NAMES.get(name, name)


# ---------------------------------------------------------------------- a decoded dataset
@dataclass
class ImageSet:
    """A decoded dataset. ``train_x`` (N, C, 32, 32) uint8 with C in {1, 3}, ``train_y``
    (N,) int64 in [0, len(classes)); the same for test. ``train_x`` is None when the
    source has no training split."""

    name: str
    classes: list[str]
    test_x: np.ndarray
    test_y: np.ndarray
    train_x: np.ndarray | None = None
    train_y: np.ndarray | None = None
    source: str = ""

    def check(self, where: str) -> None:
        """Shapes, dtypes and label range agree (CorruptFileError naming ``where`` if not)."""
        pairs = [("test", self.test_x, self.test_y)]
        if self.train_x is not None:
            pairs.append(("train", self.train_x, self.train_y))
        channels = {x.shape[1] for _, x, _ in pairs if x.ndim == 4}
        for split, x, y in pairs:
            if y is None or x.ndim != 4 or x.shape[2:] != (IMAGE_SIZE, IMAGE_SIZE) or x.dtype != np.uint8:
                raise CorruptFileError(f"{where}: {split} images decoded to {x.shape} {x.dtype}")
            if len(x) != len(y) or len(x) == 0:
                raise CorruptFileError(f"{where}: {split} split has {len(x)} images and {len(y)} labels")
            if y.min() < 0 or y.max() >= len(self.classes):
                raise CorruptFileError(f"{where}: {split} labels outside [0, {len(self.classes)})")
        if len(channels) != 1 or channels - {1, 3}:
            raise CorruptFileError(f"{where}: inconsistent channel counts {sorted(channels)}")

    def to_arrays(self, key: str) -> dict[str, np.ndarray]:
        arrays = {"key": np.array(key), "name": np.array(self.name), "classes": np.array(self.classes),
                  "source": np.array(self.source), "test_x": self.test_x, "test_y": self.test_y}
        if self.train_x is not None:
            arrays.update(train_x=self.train_x, train_y=self.train_y)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ImageSet:
        return cls(name=str(arrays["name"]), classes=[str(c) for c in arrays["classes"]],
                   test_x=arrays["test_x"], test_y=arrays["test_y"].astype(np.int64),
                   train_x=arrays.get("train_x"),
                   train_y=arrays["train_y"].astype(np.int64) if "train_y" in arrays else None,
                   source=str(arrays["source"]))
