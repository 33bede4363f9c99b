"""Multi-CV: image classification datasets as tasks (section 4.2, appendix E).

A data directory holds one entry (a folder or an archive) per dataset, each in its
standard layout; [`discover_datasets()`][leap.tasks.multicv.datasets.discover_datasets] recognizes

- **IDX** (MNIST format, ``.gz`` or raw): ``<split>-images-idx3-ubyte[.gz]`` with
  ``<split>-labels-idx1-ubyte[.gz]``, split ``train`` and ``t10k`` (or ``test``):
  MNIST, Fashion-MNIST, NotMNIST. Named after the entry (``fashion-mnist``).
- **ImageFolder** (torchvision's layout): ``train/<class>/*`` and ``test/<class>/*``,
  possibly one folder down, as a folder or a ``.zip``; labels are the sorted class
  names' positions. Any dataset a user brings; named after the entry (``cifar10``).
- **GTSRB** (official release): ``Final_Training/Images/000NN/GT-000NN.csv`` and
  ``Final_Test/[Images/]GT-final_test.csv`` (the ground-truth file, with ``ClassId``),
  ``;``-separated; named ``gtsrb``.
- **CIFAR binary** (``cifar-10-batches-bin``, ``cifar-100-binary``, folder or
  ``.tar.gz``): fixed-size records of label byte(s) and 3072 pixels; named ``cifar10``
  / ``cifar100`` (fine labels). The Python ("pickle") versions are refused: unpickling
  a file from a user path can run arbitrary code.
- **SVHN** (``train_32x32.mat``, ``test_32x32.mat``; MATLAB v5, read with SciPy, which
  does not unpickle): named ``svhn``; label 10 means digit 0.

Every image becomes 32 x 32: 28 x 28 (MNIST-style) images are zero-padded by 2 pixels
per side as in appendix E, other sizes are resized (bilinear, whole image). Grayscale
datasets keep one channel in memory and are replicated to 3 channels per batch.
Decoded datasets are cached as uint8 ``.npz`` (``allow_pickle=False``), keyed by the
source files' names, sizes and mtimes, next to the data when that is writable and in
the user cache otherwise (as for Omniglot).

Splits ([`DatasetSplits`][leap.tasks.multicv.splits.DatasetSplits]): a dataset without a training split (here MNIST and
NotMNIST come as 10,000 images only) is split 80/20 per class with a fixed seed (the
same for every run), which reports state. A validation set is carved from the training
split (seeded), the rest is optionally capped (``sample_cap``) for scaled runs.
Normalization is per dataset and channel, with the mean and standard deviation of its
whole training split.
"""

from __future__ import annotations

from leap.tasks.containers import Container
from leap.tasks.multicv.datasets import discover_datasets, load_dataset, resolve_data_dir
from leap.tasks.multicv.formats import DECODERS, DatasetSource, decode_image, fit_gray, read_idx, recognize
from leap.tasks.multicv.images import (
    CACHE_FORMAT,
    DISPLAY_NAMES,
    ENV_VAR,
    IMAGE_EXTENSIONS,
    IMAGE_SIZE,
    PAPER_DATASETS,
    TEST_ONLY_FRACTION,
    ImageSet,
    display_name,
)
from leap.tasks.multicv.splits import (
    DatasetSplits,
    MultiCV,
    channel_stats,
    leave_one_out,
    make_splits,
    stratified_split,
)

__all__ = [
    "CACHE_FORMAT",
    "DECODERS",
    "DISPLAY_NAMES",
    "ENV_VAR",
    "IMAGE_EXTENSIONS",
    "IMAGE_SIZE",
    "PAPER_DATASETS",
    "TEST_ONLY_FRACTION",
    "Container",
    "DatasetSource",
    "DatasetSplits",
    "ImageSet",
    "MultiCV",
    "channel_stats",
    "decode_image",
    "discover_datasets",
    "display_name",
    "fit_gray",
    "leave_one_out",
    "load_dataset",
    "make_splits",
    "read_idx",
    "recognize",
    "resolve_data_dir",
    "stratified_split",
]
