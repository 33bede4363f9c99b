"""Dataset formats: recognizing them in a container and decoding them (IDX, ImageFolder, GTSRB, CIFAR, SVHN)."""

from __future__ import annotations

import csv
import gzip
import io
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leap.tasks.containers import Container
from leap.tasks.multicv.images import IDX_IMAGES, IDX_LABELS, IMAGE_EXTENSIONS, IMAGE_SIZE, ImageSet
from leap.util.errors import CorruptFileError


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
