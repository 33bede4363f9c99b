"""Multi-CV: image classification datasets as tasks (section 4.2, appendix E).

A data directory holds one entry (a folder or an archive) per dataset, each in its
standard layout; :func:`discover_datasets` recognizes

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

Splits (:class:`DatasetSplits`): a dataset without a training split (here MNIST and
NotMNIST come as 10,000 images only) is split 80/20 per class with a fixed seed (the
same for every run), which reports state. A validation set is carved from the training
split (seeded), the rest is optionally capped (``sample_cap``) for scaled runs.
Normalization is per dataset and channel, with the mean and standard deviation of its
whole training split.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import re
import struct
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from leap.tasks.cache import default_cache_dir, read_cache, write_cache
from leap.util.errors import CorruptFileError
from leap.util.seeding import derive_seed

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


# ---------------------------------------------------------------------- files: folder, zip or tar
class Container:
    """A folder, ``.zip`` or ``.tar[.gz]`` seen as relative POSIX paths of files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._tar: dict[str, bytes] | None = None
        self._names: list[str] | None = None
        self._stats: list[str] = []

    @property
    def kind(self) -> str:
        if self.path.is_dir():
            return "dir"
        lower = self.path.name.lower()
        if lower.endswith(".zip"):
            return "zip"
        if lower.endswith((".tar", ".tar.gz", ".tgz")):
            return "tar"
        return "file"

    def names(self) -> list[str]:
        """Every file in the container (sorted), hidden entries and ``__MACOSX`` excluded."""
        if self._names is None:
            kind = self.kind
            if kind == "dir":
                names = []
                for root, dirs, files in os.walk(self.path):
                    dirs[:] = sorted(d for d in dirs if not _hidden(d))
                    for f in files:
                        if _hidden(f):
                            continue
                        full = Path(root) / f
                        rel = full.relative_to(self.path).as_posix()
                        st = full.stat()
                        names.append(rel)
                        self._stats.append(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}")
            elif kind == "zip":
                names = [n for n in self._open_zip().namelist()
                         if not n.endswith("/") and not any(_hidden(p) for p in n.split("/"))]
            elif kind == "tar":
                names = sorted(n for n in self._read_tar() if not any(_hidden(p) for p in n.split("/")))
            else:
                names = []
            self._names = sorted(names)
        return self._names

    def fingerprint(self) -> list[str]:
        """Names, sizes and mtimes of what is read (an archive counts as one file)."""
        if self.kind == "dir":
            self.names()
            return ["dir", *sorted(self._stats)]
        st = self.path.stat()
        return [self.kind, self.path.name, str(st.st_size), str(st.st_mtime_ns)]

    def read(self, name: str) -> bytes:
        try:
            kind = self.kind
            if kind == "dir":
                return (self.path / name).read_bytes()
            if kind == "zip":
                return self._open_zip().read(name)
            return self._read_tar()[name]
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError) as err:
            raise CorruptFileError(f"{self.where(name)}: cannot be read ({err})") from err

    def where(self, name: str) -> str:
        """How errors name a file of this container."""
        return str(self.path / name) if self.kind == "dir" else f"{self.path}:{name}"

    def _open_zip(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
                raise CorruptFileError(
                    f"{self.path}: not a readable zip archive, truncated or corrupt ({err})") from err
        return self._zip

    def _read_tar(self) -> dict[str, bytes]:
        """A tar's regular files in memory (CIFAR binary archives are ~170 MB). Members
        are read as bytes, never extracted, so their paths cannot escape anywhere."""
        if self._tar is None:
            files: dict[str, bytes] = {}
            try:
                with tarfile.open(self.path, "r:*") as tar:
                    for member in tar:
                        if member.isfile():
                            handle = tar.extractfile(member)
                            if handle is not None:
                                files[member.name.lstrip("./")] = handle.read()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
                raise CorruptFileError(
                    f"{self.path}: not a readable tar archive, truncated or corrupt ({err})") from err
            self._tar = files
        return self._tar

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        self._tar = None


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


# ---------------------------------------------------------------------- formats
@dataclass
class DatasetSource:
    """A recognized dataset: ``name``, ``kind`` (idx, imagefolder, gtsrb, cifar-binary,
    svhn) and where it lives; ``prefix`` is the folder inside the container that holds
    the layout ("" or ending in "/")."""

    name: str
    kind: str
    container: Container
    prefix: str = ""
    details: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.container.path

    def decode(self) -> ImageSet:
        data = DECODERS[self.kind](self)
        data.check(str(self.path))
        return data


_IDX_RE = re.compile(r"^(?P<prefix>(?:.*/)?)(?P<split>train|t10k|test)-images-idx3-ubyte(?P<gz>\.gz)?$")
_FOLDER_RE = re.compile(r"^(?P<prefix>(?:[^/]+/)?)(?P<split>train|test)/(?P<cls>[^/]+)/(?P<file>[^/]+)$")
_SPLIT_RE = re.compile(r"^(?P<split>train|test)/(?P<cls>[^/]+)/(?P<file>[^/]+)$")
_GTSRB_RE = re.compile(r"^(?P<prefix>(?:.*/)?)Final_Training/Images/(?P<cls>\d{5})/GT-(?P=cls)\.csv$")


def recognize(container: Container, entry_name: str) -> DatasetSource | str | None:
    """The dataset in ``container``, None if it holds no known layout, or a string
    explaining why a recognized layout is refused (the pickle versions of CIFAR)."""
    names = container.names()
    if not names:
        return None
    base = _entry_stem(entry_name)
    for n in names:
        if (m := _GTSRB_RE.match(n)) is not None:
            return DatasetSource("gtsrb", "gtsrb", container, m["prefix"])
    for n in names:
        if (m := _IDX_RE.match(n)) is not None:
            return DatasetSource(base, "idx", container, m["prefix"])
    leaves = {n.rsplit("/", 1)[-1]: n for n in names}
    if "data_batch_1.bin" in leaves and "test_batch.bin" in leaves:
        return DatasetSource("cifar10", "cifar-binary", container, _parent(leaves["test_batch.bin"]),
                             {"train": "data_batch_1.bin,data_batch_2.bin,data_batch_3.bin,data_batch_4.bin,"
                                       "data_batch_5.bin", "test": "test_batch.bin", "label_bytes": "1",
                              "label_offset": "0", "classes": "batches.meta.txt"})
    if "train.bin" in leaves and "test.bin" in leaves:
        return DatasetSource("cifar100", "cifar-binary", container, _parent(leaves["test.bin"]),
                             {"train": "train.bin", "test": "test.bin", "label_bytes": "2", "label_offset": "1",
                              "classes": "fine_label_names.txt"})
    if "train_32x32.mat" in leaves and "test_32x32.mat" in leaves:
        return DatasetSource("svhn", "svhn", container, _parent(leaves["test_32x32.mat"]))
    if "data_batch_1" in leaves or ("meta" in leaves and "train" in leaves and "test" in leaves):
        return (f"{container.path}: CIFAR in its Python (pickle) version is not read, since unpickling a file "
                "from a user path can run arbitrary code; use the binary version (cifar-10-binary.tar.gz / "
                "cifar-100-binary.tar.gz) or an ImageFolder layout")
    prefixes: dict[str, set[str]] = {}
    for n in names:
        if (m := _FOLDER_RE.match(n)) is not None and m["file"].lower().endswith(IMAGE_EXTENSIONS):
            prefixes.setdefault(m["prefix"], set()).add(m["split"])
    for prefix, splits in sorted(prefixes.items()):
        if splits == {"train", "test"}:
            return DatasetSource(base, "imagefolder", container, prefix)
    return None


def _entry_stem(entry: str) -> str:
    lower = entry.lower()
    for ext in (".tar.gz", ".tgz", ".tar", ".zip"):
        if lower.endswith(ext):
            lower = lower[: -len(ext)]
            break
    return re.sub(r"[^a-z0-9_-]+", "-", lower).strip("-") or "dataset"


def _parent(name: str) -> str:
    return name.rsplit("/", 1)[0] + "/" if "/" in name else ""


# -- IDX
def read_idx(data: bytes, where: str, expect_ndim: int) -> np.ndarray:
    """Parse an (uncompressed) IDX file: magic 0x0000 08 ndim, big-endian uint32 sizes,
    then uint8 data. Returns an array of shape ``sizes``."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise CorruptFileError(f"{where}: not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise CorruptFileError(f"{where}: IDX data type 0x{data[2]:02x} is not supported (only uint8, 0x08)")
    ndim = data[3]
    if ndim != expect_ndim:
        magic = struct.unpack(">I", data[:4])[0]
        raise CorruptFileError(f"{where}: IDX magic {magic} has {ndim} dimension(s), expected {expect_ndim} "
                               f"(images: magic {IDX_IMAGES}, labels: magic {IDX_LABELS})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptFileError(f"{where}: truncated IDX header")
    sizes = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(sizes, dtype=np.int64))
    if len(data) != expected:
        raise CorruptFileError(f"{where}: IDX file has {len(data)} bytes, its header {sizes} implies {expected} "
                               "(truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(sizes)


def _read_maybe_gz(container: Container, name: str) -> bytes:
    raw = container.read(name)
    if not name.endswith(".gz"):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptFileError(f"{container.where(name)}: not a readable gzip file, truncated or corrupt ({err})") \
            from err


def _decode_idx(src: DatasetSource) -> ImageSet:
    c, names = src.container, set(src.container.names())
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "t10k", "test"):
        image_name = next((f"{src.prefix}{split}-images-idx3-ubyte{gz}" for gz in (".gz", "")
                           if f"{src.prefix}{split}-images-idx3-ubyte{gz}" in names), None)
        if image_name is None:
            continue
        label_name = next((f"{src.prefix}{split}-labels-idx1-ubyte{gz}" for gz in (".gz", "")
                           if f"{src.prefix}{split}-labels-idx1-ubyte{gz}" in names), None)
        if label_name is None:
            raise FileNotFoundError(f"{c.where(image_name)} has no labels: expected "
                                    f"{c.where(f'{src.prefix}{split}-labels-idx1-ubyte.gz')}")
        images = read_idx(_read_maybe_gz(c, image_name), c.where(image_name), 3)
        labels = read_idx(_read_maybe_gz(c, label_name), c.where(label_name), 1)
        if len(images) != len(labels):
            raise CorruptFileError(f"{c.where(image_name)} holds {len(images)} images but "
                                   f"{c.where(label_name)} {len(labels)} labels")
        splits["train" if split == "train" else "test"] = (fit_gray(images), labels.astype(np.int64))
    if "test" not in splits:
        raise FileNotFoundError(f"{src.path}: IDX training files but no test files (t10k-images-idx3-ubyte.gz)")
    num_classes = int(max(int(y.max()) for _, y in splits.values())) + 1
    train = splits.get("train")
    return ImageSet(name=src.name, classes=[str(i) for i in range(num_classes)], test_x=splits["test"][0],
                    test_y=splits["test"][1], train_x=train[0] if train else None,
                    train_y=train[1] if train else None, source=f"IDX {src.path}")


def fit_gray(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, 1, 32, 32): zero-padded (centred) when H, W <= 32, as
    appendix E pads MNIST's 28 x 28, resized otherwise."""
    n, h, w = images.shape
    if h <= IMAGE_SIZE and w <= IMAGE_SIZE:
        out = np.zeros((n, 1, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        top, left = (IMAGE_SIZE - h) // 2, (IMAGE_SIZE - w) // 2
        out[:, 0, top: top + h, left: left + w] = images
        return out
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))[None]
                     for im in images])


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Any Pillow-readable image -> (3, 32, 32) uint8 RGB, resized (bilinear) if needed."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise CorruptFileError(f"{where}: not a readable image ({err})") from err


# -- ImageFolder
def _decode_imagefolder(src: DatasetSource) -> ImageSet:
    c = src.container
    files: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for n in c.names():
        if not n.startswith(src.prefix):
            continue
        m = _SPLIT_RE.match(n[len(src.prefix):])
        if m is not None and m["file"].lower().endswith(IMAGE_EXTENSIONS):
            files[m["split"]].setdefault(m["cls"], []).append(n)
    classes = sorted(files["train"])
    unknown = sorted(set(files["test"]) - set(classes))
    if unknown:
        raise CorruptFileError(f"{c.where(src.prefix + 'test')}: class folder(s) {unknown} have no training folder")
    out = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(classes):
            for n in sorted(files[split].get(cls, [])):
                xs.append(decode_image(c.read(n), c.where(n)))
                ys.append(label)
        if not xs:
            raise CorruptFileError(f"{c.where(src.prefix + split)}: no images")
        out[split] = (np.stack(xs), np.asarray(ys, np.int64))
    return ImageSet(name=src.name, classes=classes, test_x=out["test"][0], test_y=out["test"][1],
                    train_x=out["train"][0], train_y=out["train"][1], source=f"ImageFolder {src.path}")


# -- GTSRB
def _read_csv(c: Container, name: str) -> list[dict[str, str]]:
    text = c.read(name).decode("utf-8-sig", errors="replace")
    rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=";"))
    if not rows or "Filename" not in rows[0]:
        raise CorruptFileError(f"{c.where(name)}: not a GTSRB annotation file (';'-separated with a Filename column)")
    return rows


def _decode_gtsrb(src: DatasetSource) -> ImageSet:
    c, p = src.container, src.prefix
    names = set(c.names())
    train_csvs = sorted(n for n in names if (m := _GTSRB_RE.match(n)) is not None and m["prefix"] == p)
    xs, ys = [], []
    for csv_name in train_csvs:
        folder = _parent(csv_name)
        for i, row in enumerate(_read_csv(c, csv_name)):
            xs.append(decode_image(_row_image(c, names, folder, row, csv_name, i), c.where(folder + row["Filename"])))
            ys.append(_class_id(row, c.where(csv_name), i))
    candidates = [f"{p}Final_Test/GT-final_test.csv", f"{p}Final_Test/Images/GT-final_test.csv"]
    test_csv = next((n for n in candidates if n in names), None)
    if test_csv is None:
        raise FileNotFoundError(
            f"{c.where(p + 'Final_Test')}: no GT-final_test.csv (the test ground truth with ClassId, from "
            f"GTSRB_Final_Test_GT.zip); expected {' or '.join(c.where(n) for n in candidates)}")
    tx, ty = [], []
    for i, row in enumerate(_read_csv(c, test_csv)):
        folder = f"{p}Final_Test/Images/"
        tx.append(decode_image(_row_image(c, names, folder, row, test_csv, i), c.where(folder + row["Filename"])))
        ty.append(_class_id(row, c.where(test_csv), i))
    if not xs or not tx:
        raise CorruptFileError(f"{src.path}: GTSRB annotations list no training or no test images")
    num_classes = max(max(ys), max(ty)) + 1
    return ImageSet(name=src.name, classes=[f"{k:05d}" for k in range(num_classes)], test_x=np.stack(tx),
                    test_y=np.asarray(ty, np.int64), train_x=np.stack(xs), train_y=np.asarray(ys, np.int64),
                    source=f"GTSRB {src.path}")


def _row_image(c: Container, names: set[str], folder: str, row: dict[str, str], csv_name: str, i: int) -> bytes:
    name = folder + (row.get("Filename") or "").strip()
    if name not in names:
        raise CorruptFileError(f"{c.where(csv_name)}: row {i + 2} names {row.get('Filename')!r}, "
                               f"which is not in {c.where(folder)}")
    return c.read(name)


def _class_id(row: dict[str, str], where: str, i: int) -> int:
    value = (row.get("ClassId") or "").strip()
    if not value.isdigit():
        raise CorruptFileError(f"{where}: row {i + 2} has no valid ClassId ({value!r})")
    return int(value)


# -- CIFAR binary
def _decode_cifar_binary(src: DatasetSource) -> ImageSet:
    c, d = src.container, src.details
    label_bytes, offset = int(d["label_bytes"]), int(d["label_offset"])
    record = label_bytes + 3 * 32 * 32
    out = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for leaf in d[split].split(","):
            name = src.prefix + leaf
            if name not in set(c.names()):
                raise FileNotFoundError(f"{c.where(name)}: missing from the CIFAR binary layout")
            raw = c.read(name)
            if len(raw) == 0 or len(raw) % record:
                raise CorruptFileError(f"{c.where(name)}: {len(raw)} bytes is not a whole number of "
                                       f"{record}-byte records (truncated or corrupt)")
            recs = np.frombuffer(raw, np.uint8).reshape(-1, record)
            xs.append(recs[:, label_bytes:].reshape(-1, 3, 32, 32))
            ys.append(recs[:, offset].astype(np.int64))
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    num_classes = int(max(out["train"][1].max(), out["test"][1].max())) + 1
    classes = [str(k) for k in range(num_classes)]
    names_file = src.prefix + d["classes"]
    if names_file in set(c.names()):
        listed = [s.strip() for s in c.read(names_file).decode("utf-8", errors="replace").splitlines() if s.strip()]
        if len(listed) == num_classes:
            classes = listed
    return ImageSet(name=src.name, classes=classes, test_x=out["test"][0], test_y=out["test"][1],
                    train_x=out["train"][0], train_y=out["train"][1], source=f"CIFAR binary {src.path}")


# -- SVHN
def _decode_svhn(src: DatasetSource) -> ImageSet:
    try:
        from scipy.io import loadmat  # MATLAB v5 reader; it never unpickles
    except ImportError as err:
        raise ImportError(f"{src.path}: reading SVHN's .mat files needs SciPy "
                          "(pip install scipy, or the package's [svhn] extra)") from err
    c, out = src.container, {}
    for split in ("train", "test"):
        name = f"{src.prefix}{split}_32x32.mat"
        try:
            mat = loadmat(io.BytesIO(c.read(name)))
            x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
        except (ValueError, KeyError, TypeError, NotImplementedError, OSError) as err:
            raise CorruptFileError(f"{c.where(name)}: not a readable SVHN .mat file with X and y ({err})") from err
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise CorruptFileError(f"{c.where(name)}: X has shape {x.shape}, expected (32, 32, 3, {len(y)})")
        y = y.astype(np.int64)
        y[y == 10] = 0  # SVHN labels digit 0 as 10
        out[split] = (np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8), y)
    return ImageSet(name=src.name, classes=[str(k) for k in range(10)], test_x=out["test"][0], test_y=out["test"][1],
                    train_x=out["train"][0], train_y=out["train"][1], source=f"SVHN {src.path}")


DECODERS: dict[str, Callable[[DatasetSource], ImageSet]] = {
    "idx": _decode_idx, "imagefolder": _decode_imagefolder, "gtsrb": _decode_gtsrb,
    "cifar-binary": _decode_cifar_binary, "svhn": _decode_svhn,
}


# ---------------------------------------------------------------------- the data directory
def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The Multi-CV directory: ``data_dir``, else ``$LEAP_MULTICV_DIR``; it must exist."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or None
        if data_dir is None:
            raise FileNotFoundError(f"no Multi-CV data directory given (pass data_dir / --data-dir, or set "
                                    f"{ENV_VAR}); it holds one folder or archive per dataset")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory (the Multi-CV data directory holds one folder or "
                                "archive per dataset: IDX, ImageFolder, GTSRB, CIFAR binary or SVHN layouts)")
    return path


def discover_datasets(data_dir: str | os.PathLike | None,
                      refused: dict[str, str] | None = None) -> dict[str, DatasetSource]:
    """Every dataset the directory holds, by name (sorted). Entries of no known layout
    are skipped; two entries with one name keep the first (with a warning); entries in
    a layout that is refused (pickle) are warned about and, if ``refused`` is given,
    recorded there as entry name -> reason."""
    root = resolve_data_dir(data_dir)
    found: dict[str, DatasetSource] = {}
    for entry in sorted(root.iterdir()):
        if _hidden(entry.name):
            continue
        container = Container(entry)
        if container.kind == "file":
            continue
        result = recognize(container, entry.name)
        if isinstance(result, str):
            warnings.warn(result, stacklevel=2)
            if refused is not None:
                refused[_entry_stem(entry.name)] = result
        elif result is not None:
            if result.name in found:
                warnings.warn(f"{entry}: a second dataset named {result.name!r} (first: {found[result.name].path}); "
                              "ignored", stacklevel=2)
            else:
                found[result.name] = result
    return dict(sorted(found.items()))


def load_dataset(source: DatasetSource, cache_dir: str | os.PathLike | None = None) -> ImageSet:
    """Decode ``source`` once and cache it (``multicv-<name>-<dir>-<key>.npz``)."""
    lines = [CACHE_FORMAT, source.kind, source.prefix, *source.container.fingerprint()]
    key = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dir_tag = hashlib.sha256(str(source.path.resolve()).encode()).hexdigest()[:8]
    path = cache / f"multicv-{source.name}-{dir_tag}-{key[:24]}.npz"
    data = read_cache(path, key, lambda arrays: _checked(ImageSet.from_arrays(arrays), path), "Multi-CV")
    if data is None:
        try:
            data = source.decode()
        finally:
            source.container.close()
        write_cache(path, data.to_arrays(key), f"multicv-{source.name}-{dir_tag}-*.npz", "Multi-CV")
    return data


def _checked(data: ImageSet, path: Path) -> ImageSet:
    data.check(str(path))  # a cache that decodes to wrong shapes is rejected (and rebuilt)
    return data


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
    float in [0, 1] units, of the whole training split. :meth:`inputs` turns images into
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
    other arguments go to :func:`make_splits`.
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


__all__ = [
    "DISPLAY_NAMES", "Container", "DatasetSource", "DatasetSplits", "ImageSet", "MultiCV", "channel_stats",
    "decode_image", "discover_datasets", "display_name", "fit_gray", "leave_one_out", "load_dataset", "make_splits",
    "read_idx", "recognize", "resolve_data_dir", "stratified_split",
]
