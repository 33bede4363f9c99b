"""Multi-CV (section 4.2, appendix E): the dataset loaders of every supported layout,
the decode cache, the splits a run uses, leave-one-dataset-out pools, the protocol's
task training, and a smoke run of every method.

Loader tests build their data in the official layouts (IDX, ImageFolder folder and zip,
GTSRB with its ';'-separated CRLF CSVs, CIFAR binary, SVHN .mat). A class-c image is a
bright square at a class-dependent place, so tiny runs have something to learn and a
decoded image can be traced back to its label. The last tests read the shared data
when it is present (counts from its README) and are skipped otherwise.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import leap.experiments.multicv as mr
import leap.tasks.multicv as mc
from leap.engine.loop import MEASURED_KEYS, meta_step
from leap.experiments.multicv import (
    METHODS,
    Budget,
    MultiCVConfig,
    PlainView,
    collect_results,
    fit_task,
    run_multicv,
    write_multicv_report,
)
from leap.experiments.multicv.run import MultiCVTrainer
from leap.tasks.multicv import MultiCV, discover_datasets, display_name, leave_one_out, load_dataset, make_splits
from leap.util.errors import CorruptFileError, RunStopped, UsageError
from leap.util.files import file_sha256, list_checkpoints, load_checkpoint
from leap.util.threads import thread_policy

# The real data: $LEAP_TEST_DATA/multicv, else the checkout's ../shared/data/multicv.
SHARED = Path(os.environ.get("LEAP_TEST_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data") / "multicv"
NO_SHARED = (f"shared Multi-CV data not found at {SHARED}: set LEAP_TEST_DATA to a directory holding multicv/ "
             "to run the tests on the real data")


# ---------------------------------------------------------------------- fixtures in official layouts
def pattern(label: int, size: tuple[int, int] = (28, 28), index: int = 0) -> np.ndarray:
    """(H, W) uint8: a 6x6 bright square whose position encodes the label, plus a dim
    pixel that makes every image distinct."""
    h, w = size
    img = np.zeros((h, w), np.uint8)
    top, left = 2 + 6 * (label % 3), 2 + 6 * (label // 3)
    img[top: top + 6, left: left + 6] = 200
    img[h - 1, index % w] = 50
    return img


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def labels_for(n: int, classes: int) -> np.ndarray:
    return np.arange(n) % classes


def write_idx(root: Path, name: str, n_train: int | None = 40, n_test: int = 20, classes: int = 3,
              gz: bool = True) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    splits = {"t10k": n_test} if n_train is None else {"train": n_train, "t10k": n_test}
    for split, n in splits.items():
        y = labels_for(n, classes)
        x = np.stack([pattern(int(label), index=i) for i, label in enumerate(y)])
        for kind, arr, ext in (("images", x, "idx3"), ("labels", y, "idx1")):
            data = idx_bytes(arr)
            path = folder / f"{split}-{kind}-{ext}-ubyte{'.gz' if gz else ''}"
            path.write_bytes(gzip.compress(data) if gz else data)
    return folder


def png(label: int, size: tuple[int, int], mode: str, index: int) -> bytes:
    gray = pattern(label, (size[1], size[0]), index)
    im = Image.fromarray(gray).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


IMAGEFOLDER_CLASSES = ("zebra", "ant", "moth")  # sorted: ant=0, moth=1, zebra=2


def write_imagefolder(root: Path, name: str = "mydata", per_class: tuple[int, int] = (6, 2),
                      size: tuple[int, int] = (40, 36)) -> Path:
    folder = root / name
    for split, n in zip(("train", "test"), per_class):
        for cls in IMAGEFOLDER_CLASSES:
            d = folder / split / cls
            d.mkdir(parents=True)
            label = sorted(IMAGEFOLDER_CLASSES).index(cls)
            for i in range(n):
                mode = "L" if i == 0 else "RGB"  # one grayscale image per class: converted to RGB
                (d / f"{i:04d}.png").write_bytes(png(label, size, mode, i))
    return folder


def zip_folder(folder: Path, target: Path, arc_prefix: str) -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, arc_prefix + path.relative_to(folder).as_posix())
    return target


def ppm(label: int, size: tuple[int, int], index: int) -> bytes:
    im = Image.fromarray(pattern(label, (size[1], size[0]), index)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="PPM")
    return buf.getvalue()


GTSRB_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def write_gtsrb(root: Path, classes: int = 3, per_class: int = 5, n_test: int = 6,
                test_gt_in_images: bool = False) -> Path:
    """The official folders: GTSRB/Final_Training/Images/000NN/{GT-000NN.csv, *.ppm},
    GTSRB/Final_Test/Images/*.ppm and GT-final_test.csv, CSVs ';'-separated with CRLF."""
    base = root / "GTSRB"
    for c in range(classes):
        d = base / "Final_Training" / "Images" / f"{c:05d}"
        d.mkdir(parents=True)
        rows = [GTSRB_HEADER]
        for i in range(per_class):
            size = (30 + i, 28 + 2 * i)  # the official images vary in size
            fname = f"{i // 2:05d}_{i % 2:05d}.ppm"
            (d / fname).write_bytes(ppm(c, size, i))
            rows.append(f"{fname};{size[0]};{size[1]};5;5;{size[0] - 5};{size[1] - 5};{c}")
        (d / f"GT-{c:05d}.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    images = base / "Final_Test" / "Images"
    images.mkdir(parents=True)
    rows = [GTSRB_HEADER]
    for i in range(n_test):
        c = i % classes
        (images / f"{i:05d}.ppm").write_bytes(ppm(c, (33, 31), i))
        rows.append(f"{i:05d}.ppm;33;31;5;5;28;26;{c}")
    gt = (images if test_gt_in_images else base / "Final_Test") / "GT-final_test.csv"
    gt.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    # The official image-only test CSV (no ClassId) sits in Images/ as well.
    (images / "GT-final_test.test.csv").write_bytes(("\r\n".join(r.rsplit(";", 1)[0] for r in rows) + "\r\n").encode())
    return base


def cifar_records(n: int, label_bytes: int, classes: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    y = labels_for(n, classes)
    x = np.stack([np.stack([pattern(int(label), (32, 32), i)] * 3) for i, label in enumerate(y)])  # (n, 3, 32, 32)
    coarse = (y // 2).astype(np.uint8)
    recs = [bytes([coarse[i], y[i]][-label_bytes:]) + x[i].tobytes() for i in range(n)]
    return b"".join(recs), x, y


def decode(source: mc.DatasetSource) -> mc.ImageSet:
    return source.decode()


def only_source(root: Path) -> mc.DatasetSource:
    found = discover_datasets(root)
    assert len(found) == 1, found
    return next(iter(found.values()))


# ---------------------------------------------------------------------- IDX
def test_idx_dataset_is_found_by_its_folder_name_and_padded_to_32x32(tmp_path):
    write_idx(tmp_path, "Fashion-MNIST")
    src = only_source(tmp_path)
    assert (src.name, src.kind) == ("fashion-mnist", "idx")
    data = decode(src)
    assert data.train_x.shape == (40, 1, 32, 32) and data.test_x.shape == (20, 1, 32, 32)
    assert data.train_x.dtype == np.uint8 and data.train_y.dtype == np.int64


def test_idx_28x28_images_are_zero_padded_by_2_pixels_per_side_as_in_appendix_e(tmp_path):
    write_idx(tmp_path, "mnist")
    data = decode(only_source(tmp_path))
    img = data.train_x[4, 0]
    assert np.array_equal(img[2:30, 2:30], pattern(int(data.train_y[4]), index=4))
    assert img[:2].max() == 0 and img[30:].max() == 0 and img[:, :2].max() == 0 and img[:, 30:].max() == 0


def test_uncompressed_idx_files_are_read_too(tmp_path):
    write_idx(tmp_path / "a", "mnist", gz=True)
    write_idx(tmp_path / "b", "mnist", gz=False)
    a, b = decode(only_source(tmp_path / "a")), decode(only_source(tmp_path / "b"))
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)


def test_idx_with_a_bad_magic_number_is_an_error_naming_the_file(tmp_path):
    folder = write_idx(tmp_path, "mnist")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x12\x34" + gzip.decompress(path.read_bytes())[2:]))
    with pytest.raises(CorruptFileError, match=r"train-images-idx3-ubyte\.gz.*magic"):
        decode(only_source(tmp_path))


def test_idx_shorter_than_its_header_says_is_an_error_naming_the_file(tmp_path):
    folder = write_idx(tmp_path, "mnist")
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(CorruptFileError, match=r"t10k-images-idx3-ubyte\.gz.*truncated"):
        decode(only_source(tmp_path))


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    folder = write_idx(tmp_path, "mnist")
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CorruptFileError, match=r"train-labels-idx1-ubyte\.gz.*gzip"):
        decode(only_source(tmp_path))


def test_idx_images_without_their_labels_file_is_an_error_naming_it(tmp_path):
    folder = write_idx(tmp_path, "mnist")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz"):
        decode(only_source(tmp_path))


def test_idx_images_and_labels_of_different_counts_is_an_error(tmp_path):
    folder = write_idx(tmp_path, "mnist")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8))))
    with pytest.raises(CorruptFileError, match=r"20 images but .* 7 labels"):
        decode(only_source(tmp_path))


# ---------------------------------------------------------------------- ImageFolder
def test_imagefolder_labels_are_the_sorted_class_names_positions(tmp_path):
    write_imagefolder(tmp_path)
    src = only_source(tmp_path)
    assert (src.name, src.kind) == ("mydata", "imagefolder")
    data = decode(src)
    assert data.classes == ["ant", "moth", "zebra"]
    assert np.bincount(data.train_y).tolist() == [6, 6, 6] and np.bincount(data.test_y).tolist() == [2, 2, 2]


def test_imagefolder_images_become_32x32_rgb_including_grayscale_files(tmp_path):
    write_imagefolder(tmp_path, size=(40, 36))
    data = decode(only_source(tmp_path))
    assert data.train_x.shape == (18, 3, 32, 32)
    first = data.train_x[0]  # image 0000 of class "ant" is a grayscale PNG
    assert np.array_equal(first[0], first[1]) and np.array_equal(first[1], first[2])


def test_imagefolder_zip_with_a_top_folder_reads_like_the_folder(tmp_path):
    folder = write_imagefolder(tmp_path / "src")
    (tmp_path / "data").mkdir()
    zip_folder(folder, tmp_path / "data" / "mydata.zip", "mydata/")
    src = only_source(tmp_path / "data")
    assert (src.name, src.kind, src.prefix) == ("mydata", "imagefolder", "mydata/")
    a, b = decode(src), decode(only_source(tmp_path / "src"))
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)


def test_imagefolder_test_class_without_training_folder_is_an_error(tmp_path):
    folder = write_imagefolder(tmp_path)
    (folder / "test" / "bee").mkdir()
    (folder / "test" / "bee" / "0.png").write_bytes(png(0, (32, 32), "RGB", 0))
    with pytest.raises(CorruptFileError, match=r"\['bee'\] have no training folder"):
        decode(only_source(tmp_path))


def test_corrupt_image_is_an_error_naming_it(tmp_path):
    folder = write_imagefolder(tmp_path)
    (folder / "train" / "moth" / "0003.png").write_bytes(b"not a png")
    with pytest.raises(CorruptFileError, match=r"moth/0003\.png: not a readable image"):
        decode(only_source(tmp_path))


def test_corrupt_zip_is_an_error_naming_it(tmp_path):
    (tmp_path / "cifar10.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CorruptFileError, match=r"cifar10\.zip: not a readable zip"):
        discover_datasets(tmp_path)


# ---------------------------------------------------------------------- GTSRB
def test_gtsrb_official_layout_reads_class_ids_from_the_csvs(tmp_path):
    write_gtsrb(tmp_path, classes=3, per_class=5, n_test=6)
    src = only_source(tmp_path)
    assert (src.name, src.kind) == ("gtsrb", "gtsrb")
    data = decode(src)
    assert data.train_x.shape == (15, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    assert np.bincount(data.train_y).tolist() == [5, 5, 5] and data.test_y.tolist() == [0, 1, 2, 0, 1, 2]


def test_gtsrb_zip_reads_like_the_folder_and_accepts_the_ground_truth_in_images(tmp_path):
    write_gtsrb(tmp_path / "a")
    write_gtsrb(tmp_path / "b", test_gt_in_images=True)
    (tmp_path / "z").mkdir()
    zip_folder(tmp_path / "b" / "GTSRB", tmp_path / "z" / "gtsrb.zip", "GTSRB/")
    a, b, z = (decode(only_source(tmp_path / d)) for d in ("a", "b", "z"))
    assert np.array_equal(a.train_x, z.train_x) and np.array_equal(a.test_y, b.test_y)


def test_gtsrb_without_test_ground_truth_is_an_error_naming_the_file(tmp_path):
    base = write_gtsrb(tmp_path)
    (base / "Final_Test" / "GT-final_test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"GT-final_test\.csv"):
        decode(only_source(tmp_path))


def test_gtsrb_csv_row_naming_a_missing_image_is_an_error_naming_the_row(tmp_path):
    base = write_gtsrb(tmp_path)
    (base / "Final_Training" / "Images" / "00001" / "00001_00000.ppm").unlink()
    with pytest.raises(CorruptFileError, match=r"GT-00001\.csv: row 4 names '00001_00000\.ppm'"):
        decode(only_source(tmp_path))


# ---------------------------------------------------------------------- CIFAR binary, SVHN, pickle
def test_cifar100_binary_folder_and_tarball_use_fine_labels_and_names(tmp_path):
    folder = tmp_path / "a" / "cifar-100-binary"
    folder.mkdir(parents=True)
    train, x, y = cifar_records(12, 2, 4)
    test, _, ty = cifar_records(8, 2, 4)
    (folder / "train.bin").write_bytes(train)
    (folder / "test.bin").write_bytes(test)
    (folder / "fine_label_names.txt").write_text("apple\nbee\ncar\ndog\n")
    (tmp_path / "b").mkdir()
    with tarfile.open(tmp_path / "b" / "cifar-100-binary.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-100-binary")
    for d in ("a", "b"):
        src = only_source(tmp_path / d)
        assert (src.name, src.kind) == ("cifar100", "cifar-binary")
        data = decode(src)
        assert np.array_equal(data.train_x, x) and np.array_equal(data.train_y, y)
        assert np.array_equal(data.test_y, ty) and data.classes == ["apple", "bee", "car", "dog"]


def test_cifar_binary_with_a_partial_record_is_an_error(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train, _, _ = cifar_records(4, 2, 2)
    (folder / "train.bin").write_bytes(train[:-10])
    (folder / "test.bin").write_bytes(train)
    with pytest.raises(CorruptFileError, match=r"train\.bin.*whole number of 3074-byte records"):
        decode(only_source(tmp_path))


def test_cifar_pickle_version_is_refused_with_the_reason(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (folder / name).write_bytes(b"\x80\x04 pickled")
    write_idx(tmp_path, "mnist")
    with pytest.warns(UserWarning, match="pickle"):
        found = discover_datasets(tmp_path)
    assert list(found) == ["mnist"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"cifar-10-batches-py.*not found.*pickle"):
            MultiCV(tmp_path, datasets=["cifar-10-batches-py"])


def test_svhn_mat_files_give_nchw_images_and_digit_0_for_label_10(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    folder = tmp_path / "svhn"
    folder.mkdir()
    expected = {}
    for split, n in (("train", 6), ("test", 4)):
        x = np.random.default_rng(n).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # H, W, C, N as SVHN stores
        y = (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8)  # 1..10, 10 meaning digit 0
        y[0] = 10
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        expected[split] = (x, y.reshape(-1))
    data = decode(only_source(tmp_path))
    x, y = expected["train"]
    assert data.train_x.shape == (6, 3, 32, 32)
    assert np.array_equal(data.train_x[2, 1], x[:, :, 1, 2])
    assert data.train_y[0] == 0 and data.train_y[1:].tolist() == y[1:].tolist()


# ---------------------------------------------------------------------- the data directory and cache
def test_default_pool_is_every_dataset_the_directory_holds(tmp_path):
    write_idx(tmp_path, "mnist", n_train=None)
    write_imagefolder(tmp_path, "cifar10")
    write_gtsrb(tmp_path)
    (tmp_path / "README.md").write_text("not a dataset")
    assert MultiCV(tmp_path).names == ["cifar10", "gtsrb", "mnist"]


def test_datasets_choose_the_pool_and_unknown_names_are_an_error_listing_the_known(tmp_path):
    write_idx(tmp_path, "mnist")
    write_idx(tmp_path, "notmnist")
    assert MultiCV(tmp_path, datasets=["notmnist"]).names == ["notmnist"]
    with pytest.raises(ValueError, match=r"\['svhn'\] not found .* holds \['mnist', 'notmnist'\]"):
        MultiCV(tmp_path, datasets=["mnist", "svhn"])


def test_missing_data_directory_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        MultiCV(tmp_path / "nowhere")


def test_directory_without_any_known_layout_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match="no dataset of a known layout"):
        MultiCV(tmp_path)


def test_second_load_reads_the_cache_without_decoding(tmp_path, monkeypatch):
    write_imagefolder(tmp_path / "data")
    src = only_source(tmp_path / "data")
    first = load_dataset(src, tmp_path / "cache")
    monkeypatch.setitem(mc.DECODERS, "imagefolder", lambda s: pytest.fail("decoded again"))
    second = load_dataset(only_source(tmp_path / "data"), tmp_path / "cache")
    assert np.array_equal(first.train_x, second.train_x) and second.classes == first.classes
    assert len(list((tmp_path / "cache").glob("multicv-mydata-*.npz"))) == 1


def test_cache_goes_to_the_user_cache_when_the_data_directory_is_read_only(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    write_idx(data_dir, "mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LEAP_CACHE_DIR", raising=False)  # the test session's cache (conftest)
    data_dir.chmod(0o555)
    try:
        load_dataset(only_source(data_dir))
    finally:
        data_dir.chmod(0o755)
    assert list((tmp_path / "xdg" / "leap").glob("multicv-mnist-*.npz"))
    assert not (data_dir / ".leap-cache").exists()


def test_changed_source_invalidates_the_cache(tmp_path):
    folder = write_imagefolder(tmp_path / "data")
    load_dataset(only_source(tmp_path / "data"), tmp_path / "cache")
    (folder / "train" / "ant" / "0099.png").write_bytes(png(0, (32, 32), "RGB", 99))
    data = load_dataset(only_source(tmp_path / "data"), tmp_path / "cache")
    assert len(data.train_y) == 19
    assert len(list((tmp_path / "cache").glob("multicv-mydata-*.npz"))) == 1  # the stale one is gone


# ---------------------------------------------------------------------- splits of a run
def test_test_only_dataset_is_split_80_20_per_class_the_same_way_every_time(tmp_path):
    write_idx(tmp_path, "mnist", n_train=None, n_test=50, classes=5)
    data = load_dataset(only_source(tmp_path), tmp_path / "cache")
    a = make_splits(data, val_size=5)
    b = make_splits(data, val_size=5)
    assert a.sizes() == {"train": 35, "val": 5, "test": 10}
    assert np.bincount(a.test_y.numpy()).tolist() == [2] * 5
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_x, b.train_x)
    assert any("no training split" in n and "40 train / 10 test" in n for n in a.notes)


def test_train_validation_and_test_images_are_disjoint(tmp_path):
    write_idx(tmp_path, "mnist", n_train=None, n_test=60)
    s = make_splits(load_dataset(only_source(tmp_path), tmp_path / "cache"), val_size=8)
    keys = [{bytes(im.numpy().tobytes()) for im in x} for x in (s.train_x, s.val_x, s.test_x)]
    assert sum(len(k) for k in keys) == len(set().union(*keys)) == 60


def test_sample_cap_limits_training_images_and_is_reported(tmp_path):
    write_imagefolder(tmp_path)
    s = make_splits(load_dataset(only_source(tmp_path), tmp_path / "cache"), val_size=3, sample_cap=5, test_cap=4)
    assert s.sizes() == {"train": 5, "val": 3, "test": 4}
    assert any("capped at 5" in n for n in s.notes)


def test_inputs_are_normalized_per_channel_with_training_statistics_and_3_channels(tmp_path):
    write_idx(tmp_path, "mnist", n_train=60, n_test=10)
    data = load_dataset(only_source(tmp_path), tmp_path / "cache")
    s = make_splits(data, val_size=6)
    x = s.inputs(torch.cat([s.train_x, s.val_x]))  # the whole training split
    assert x.shape == (60, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 2])
    assert x.mean().item() == pytest.approx(0, abs=1e-5) and x.std(unbiased=False).item() == pytest.approx(1, abs=1e-4)


def test_leave_one_out_pool_never_contains_the_held_out_dataset():
    names = ["cifar10", "fashion-mnist", "gtsrb", "mnist", "notmnist"]
    for held in names:
        pool = leave_one_out(names, held)
        assert held not in pool and sorted([*pool, held]) == sorted(names)
    with pytest.raises(ValueError, match="not in the pool"):
        leave_one_out(names, "svhn")
    with pytest.raises(ValueError, match="no dataset besides"):
        leave_one_out(["mnist"], "mnist")


# ---------------------------------------------------------------------- the protocol
@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory) -> Path:
    """Three tiny datasets in three layouts: a test-only IDX set, an ImageFolder zip and GTSRB."""
    root = tmp_path_factory.mktemp("multicv")
    write_idx(root, "mnist", n_train=None, n_test=60, classes=3)
    folder = write_imagefolder(root / "staging", "cifar10", per_class=(14, 4), size=(32, 32))
    zip_folder(folder, root / "cifar10.zip", "cifar10/")
    shutil.rmtree(root / "staging")
    write_gtsrb(root, classes=3, per_class=14, n_test=12)
    return root


def tiny(held_out: str, method: str, data_dir: Path, **kw) -> MultiCVConfig:
    values = dict(meta_steps=2, meta_batch=2, task_epochs=1.0, task_batch=8, eval_epochs=2.0, eval_batch=8,
                  val_size=6, check_every=2, patience=3)
    values.update(kw)
    return MultiCVConfig(held_out=held_out, method=method, data_dir=str(data_dir), **values)


def test_budget_counts_steps_per_epoch_without_the_partial_batch():
    b = Budget(epochs=1.5, batch=32, lr=0.1, patience=10, check_every=1)
    assert b.steps_per_epoch(100) == 3 and b.max_steps(100) == 4 and b.max_steps(10) == 2


def test_task_stops_once_validation_has_not_improved_for_patience_checks(pool_dir):
    data = MultiCV(pool_dir).get("gtsrb")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    budget = Budget(epochs=50, batch=8, lr=1e-12, patience=3, check_every=1)  # nothing can improve
    run = fit_task(PlainView(model), data, budget, torch.Generator().manual_seed(0))
    assert run.stopped_early and run.steps == 4 and run.max_steps > 4
    assert run.train_errors.shape == (4,)


def test_task_restores_the_parameters_of_its_best_validation_check(pool_dir):
    data = MultiCV(pool_dir).get("cifar10")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    view = PlainView(model)
    run = fit_task(view, data, Budget(3, 8, 0.5, 100, 1), torch.Generator().manual_seed(0))
    assert mr.error_rate(view, data, data.val_x, data.val_y) == run.best_val_error


class MeanThenBatchNorm(torch.nn.Module):
    """Class 1 is the brighter one: the image's mean brightness, normalized by batch norm with
    the statistics of the batch at hand (as the Multi-CV networks do), decides the class."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(1, affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x.mean((1, 2, 3))[:, None])
        return torch.cat([-z, z], 1)


def test_the_error_does_not_depend_on_the_class_order_the_splits_are_stored_in():
    # Splits are stored sorted by class. Evaluated in that order, chunks of 500 images hold
    # one class each, batch norm removes the brightness that separates the classes, and
    # about half the images are misclassified; evaluated in chunks of mixed classes, none.
    g = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat_interleave(1000)
    x = (50 + 150 * y.view(-1, 1, 1, 1) + torch.randint(0, 20, (2000, 1, 32, 32), generator=g)).to(torch.uint8)
    data = mc.DatasetSplits("toy", 2, x, y, x, y, x, y, torch.tensor([0.5]), torch.tensor([0.25]))
    view = PlainView(MeanThenBatchNorm())
    shuffled = torch.randperm(2000, generator=g)
    assert mr.error_rate(view, data, x, y) == 0.0
    assert mr.error_rate(view, data, x[shuffled], y[shuffled]) == 0.0


def test_leap_meta_learns_the_encoder_only_and_moves_it(pool_dir):
    cfg = tiny("mnist", "leap", pool_dir)
    trainer = MultiCVTrainer(cfg, cfg.benchmark())
    method = trainer.method
    assert all(n.startswith("encoder") for n in method.learner.param_names)
    before = [p.detach().clone() for p in method.learner.parameters()]
    meta_step(trainer)  # the tasks' meta-gradient, then fit's meta-update of θ0
    assert all(not torch.equal(a, b) for a, b in zip(before, method.learner.parameters()))


def test_every_method_pretrains_on_the_others_and_evaluates_on_the_held_out(pool_dir, tmp_path):
    for method in METHODS:
        result = run_multicv(tiny("mnist", method, pool_dir), tmp_path / method, log=lambda m: None)
        assert result["pool"] == ["cifar10", "gtsrb"]
        for key in ("test_error", "train_error", "auc", "best_val_error"):
            assert 0 <= result[key] <= 1, (method, key)
        assert result["meta_steps"] == (0 if method == "none" else 2)
        assert (tmp_path / method / "result.json").is_file()
        assert any("no training split" in n for n in result["notes"])
    paths = write_multicv_report(tmp_path)
    text = paths[0].read_text()
    for label in ("Leap", "Finetuning", "Progressive Nets", "HAT", "No pretraining"):
        assert f"| {label} |" in text
    assert "| MNIST | Leap |" in text and "| 0.7 | 0.1 | 0.6 |" in text  # the paper's row beside ours


def test_runs_that_differ_in_their_seed_alone_share_one_protocol_and_the_report_names_each_runs_seed_and_cost(
        pool_dir, tmp_path):
    for seed in (0, 1):
        run_multicv(tiny("mnist", "none", pool_dir, seed=seed), tmp_path / f"none-{seed}", log=lambda m: None)
    text = write_multicv_report(tmp_path)[0].read_text()
    protocol = text.split("## Protocol")[1].split("## Data notes")[0]
    assert protocol.count("- `{") == 1 and "- seeds: 0, 1" in protocol and "different protocols" not in protocol
    runs = text.split("## Runs")[1]
    assert "| mnist | none | 0 | 0 |" in runs and "| mnist | none | 1 | 0 |" in runs
    cost = text.split("## Cost")[1].split("## Runs")[0]
    assert "| No pretraining | 2 | 0.0 |" in cost and "| All | 2 | 0.0 |" in cost
    run_multicv(tiny("mnist", "none", pool_dir, patience=4), tmp_path / "other", log=lambda m: None)
    assert "different protocols" in write_multicv_report(tmp_path)[0].read_text()


def synthetic_entries(values: dict[tuple[str, str], list[tuple[float, float]]], parameters: dict[str, int]):
    """(config, result) pairs: per (held-out, method) one (test error, AUC) per seed."""
    return [({"seed": seed}, {"held_out": d, "method": m, "test_error": test, "train_error": 0.0, "auc": auc,
                              "parameters": parameters[m], "eval_steps": 10, "curve": [0.5, 0.2]})
            for (d, m), runs in values.items() for seed, (test, auc) in enumerate(runs)]


def test_the_report_reads_each_claim_of_section_4_2_off_the_paired_intervals(tmp_path):
    from leap.experiments.multicv.report import claims, paired_table, runs_by_cell, summary_table

    noise = (0.0, 0.01, -0.01)
    values = {}
    for m, base in (("leap", 0.10), ("finetune", 0.20), ("progressive", 0.25), ("hat", 0.40), ("none", 0.30)):
        values[("cifar10", m)] = [(base + e, base + e) for e in noise]
    # on gtsrb Leap trains faster than finetuning in some seeds and slower in others, and ends worse
    values[("gtsrb", "leap")] = [(0.30, 0.20), (0.31, 0.10), (0.32, 0.30)]
    values[("gtsrb", "finetune")] = [(0.10, 0.20), (0.11, 0.20), (0.12, 0.20)]
    entries = synthetic_entries(values, {"leap": 100, "finetune": 100, "progressive": 730, "hat": 120, "none": 100})
    cells = runs_by_cell(entries)
    sentences = "\n".join(claims(cells))
    assert "lowest AUC (it trains fastest) on Cifar10: holds" in sentences
    assert "lowest final test error on Cifar10: holds" in sentences
    assert "lowest AUC (it trains fastest) on Traffic Signs: cannot be told" in sentences
    assert "lowest final test error on Traffic Signs: does not hold: above Finetuning" in sentences
    assert "HAT ends below no pretraining (a higher test error) on some datasets: holds on Cifar10" in sentences
    assert "Finetuning ends below no pretraining (a higher test error) on some datasets: not shown" in sentences
    assert "Progressive Nets' size: 7.3x" in sentences
    pairs = paired_table(cells)
    assert "| Cifar10 | No pretraining | -20.0 ± 0.0 (n=3) | -20.0 ± 0.0 (n=3) | lower" in pairs
    summary = summary_table(cells)  # only CIFAR-10 has every method
    assert "Over the 1 held-out datasets" in summary and "| Leap | 1.0 | 1.0 | 10.0 |" in summary
    assert "| HAT | 5.0 | 5.0 | 40.0 |" in summary


def test_interrupted_run_resumes_from_its_last_meta_step_to_the_same_result(pool_dir, tmp_path, monkeypatch):
    cfg = tiny("gtsrb", "leap", pool_dir, meta_steps=3)
    whole = run_multicv(cfg, tmp_path / "whole", log=lambda m: None)
    original = mr.LeapMethod.pretrain_step

    def crash_at_third(self, step, **kwargs):
        if step == 2:
            raise KeyboardInterrupt
        return original(self, step, **kwargs)

    monkeypatch.setattr(mr.LeapMethod, "pretrain_step", crash_at_third)
    with pytest.raises(KeyboardInterrupt):
        run_multicv(cfg, tmp_path / "cut", log=lambda m: None)
    monkeypatch.setattr(mr.LeapMethod, "pretrain_step", original)
    resumed = run_multicv(cfg, tmp_path / "cut", log=lambda m: None)
    for key in ("test_error", "train_error", "auc", "meta_steps"):
        assert resumed[key] == whole[key], key
    records = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]


def test_finished_run_is_not_run_again_and_another_config_is_refused(pool_dir, tmp_path, monkeypatch):
    cfg = tiny("gtsrb", "none", pool_dir)
    first = run_multicv(cfg, tmp_path / "run", log=lambda m: None)
    monkeypatch.setattr(mr, "make_method", lambda *a: pytest.fail("ran again"))
    assert run_multicv(cfg, tmp_path / "run", log=lambda m: None) == first
    with pytest.raises(UsageError, match="different run"):
        run_multicv(tiny("gtsrb", "none", pool_dir, seed=1), tmp_path / "run", log=lambda m: None)


def test_a_result_json_that_is_not_the_runs_evaluation_is_evaluated_again_and_left_out_of_the_report(
        pool_dir, tmp_path, capsys):
    # result.json names its source (the config, the digest of the pretrained state): one
    # edited by hand or left from another pretraining is never shown as the run's result.
    cfg = tiny("gtsrb", "leap", pool_dir)
    run = tmp_path / "run"
    first = run_multicv(cfg, run, log=lambda m: None)
    assert first["config"] == cfg.to_dict() and len(first["pretrained_sha256"]) == 64
    planted = {**first, "test_error": 0.0, "config": {**first["config"], "eval_epochs": 99}}
    (run / "result.json").write_text(json.dumps(planted))
    assert collect_results(tmp_path) == []
    assert "result.json was made by another configuration" in capsys.readouterr().err
    messages: list[str] = []
    again = run_multicv(cfg, run, log=messages.append)
    assert any("evaluating again: result.json was made by another configuration" in m for m in messages)
    assert again["test_error"] == first["test_error"]
    # one computed in the splits' class order (before the evaluation-order fix) is not shown either
    (run / "result.json").write_text(json.dumps({k: v for k, v in first.items() if k != "error_order"}))
    assert collect_results(tmp_path) == []
    assert "class order" in capsys.readouterr().err
    (run / "result.json").write_text(json.dumps(first))
    newest = sorted((run / "checkpoints").iterdir())[-1]
    newest.write_bytes(newest.read_bytes() + b"another pretraining")
    assert collect_results(tmp_path) == []
    assert "another pretrained state" in capsys.readouterr().err
    (run / "config.json").write_text("{not json")  # a damaged config is named, not skipped in silence
    assert collect_results(tmp_path) == []
    assert f"left out {run}: {run / 'config.json'}: not a readable JSON record" in capsys.readouterr().err


def test_a_finished_run_extended_by_more_meta_steps_equals_the_longer_run(pool_dir, tmp_path):
    longer = run_multicv(tiny("gtsrb", "leap", pool_dir, meta_steps=3), tmp_path / "longer", log=lambda m: None)
    run_multicv(tiny("gtsrb", "leap", pool_dir, meta_steps=2), tmp_path / "run", log=lambda m: None)
    extended = run_multicv(tiny("gtsrb", "leap", pool_dir, meta_steps=3), tmp_path / "run", log=lambda m: None)
    for key in ("test_error", "train_error", "auc", "curve", "meta_steps", "best_val_error"):
        assert extended[key] == longer[key], key
    with pytest.raises(UsageError, match="different run"):  # a run is not shortened
        run_multicv(tiny("gtsrb", "leap", pool_dir, meta_steps=2), tmp_path / "run", log=lambda m: None)


def test_meta_training_stops_when_mean_validation_error_stops_improving(pool_dir, tmp_path):
    cfg = tiny("gtsrb", "finetune", pool_dir, meta_steps=50, meta_patience=1, task_lr=1e-9)
    result = run_multicv(cfg, tmp_path / "run", log=lambda m: None)
    assert result["meta_stopped_early"] and result["meta_steps"] < 50


def test_a_meta_update_that_makes_theta0_non_finite_is_rolled_back_and_the_run_stops_then_resumes(
        pool_dir, tmp_path, monkeypatch):
    # The loop owns Multi-CV's meta-update too: when it leaves θ0 non-finite (here an
    # infinite meta-gradient in meta-step 2; Adam then writes NaN), θ0 and Adam's state are
    # put back, the run stops with the loop's message and a checkpoint of meta-step 1 whose
    # θ0 is the finite one of meta-step 1, and resuming finishes the same run.
    from leap.experiments.multicv.methods import LeapMethod

    cfg = tiny("gtsrb", "leap", pool_dir, meta_steps=3)
    whole = run_multicv(cfg, tmp_path / "whole", log=lambda m: None)
    original = LeapMethod.end_step
    theta: dict[str, torch.Tensor] = {}
    calls: list[int] = []

    def infinite_meta_gradient_in_meta_step_2(self, riders):
        tasks = original(self, riders)
        calls.append(1)
        if len(calls) == 2:
            theta.update({f"init.{n}": p.detach().clone() for n, p in self.learner.named_parameters()})
            for p in self.learner.parameters():
                p.grad.fill_(float("inf"))
        return tasks

    monkeypatch.setattr(LeapMethod, "end_step", infinite_meta_gradient_in_meta_step_2)
    with pytest.raises(RunStopped, match=r"meta-step 2 made θ0 non-finite .*θ0 is kept at meta-step 1") as stopped:
        run_multicv(cfg, tmp_path / "cut", log=lambda m: None)
    assert stopped.value.exit_code == 1
    step, path = list_checkpoints(tmp_path / "cut" / "checkpoints")[-1]
    learner = load_checkpoint(path)["method"]["learner"]
    assert step == 1 and theta and all(torch.equal(learner[k], v) for k, v in theta.items())
    assert all(bool(torch.isfinite(v).all()) for v in theta.values())
    monkeypatch.setattr(LeapMethod, "end_step", original)
    resumed = run_multicv(cfg, tmp_path / "cut", log=lambda m: None)
    for key in ("test_error", "train_error", "auc", "curve", "meta_steps", "best_val_error"):
        assert resumed[key] == whole[key], key


@pytest.mark.parametrize("method", ["leap", "finetune", "hat", "progressive"])
def test_sigterm_stops_pretraining_after_the_task_in_flight_and_resume_continues_inside_the_meta_step(
        pool_dir, tmp_path, monkeypatch, method):
    # A Multi-CV meta-step trains each task to convergence (minutes each): a real SIGTERM
    # during the first task of meta-step 2 stops after that task with a checkpoint holding
    # the partial meta-step, and the resumed run continues with its second task and ends
    # exactly as an uninterrupted one.
    cfg = tiny("gtsrb", method, pool_dir, meta_steps=3)
    whole = run_multicv(cfg, tmp_path / "whole", log=lambda m: None)
    from leap.experiments.multicv.methods import METHOD_CLASSES

    cls = METHOD_CLASSES[method]
    original = cls.train_task

    def terminated_during_a_task(self, step, index, name, generator):
        if (step, index) == (1, 0):
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, step, index, name, generator)

    monkeypatch.setattr(cls, "train_task", terminated_during_a_task)
    with pytest.raises(RunStopped, match=r"interrupted inside meta-step 2 \(after task 1 of 2\)") as stopped:
        run_multicv(cfg, tmp_path / "cut", log=lambda m: None)
    assert stopped.value.exit_code == 128 + signal.SIGTERM and "continue with --resume" in str(stopped.value)
    assert not (tmp_path / "cut" / "result.json").exists()
    monkeypatch.setattr(cls, "train_task", original)
    resumed = run_multicv(cfg, tmp_path / "cut", log=lambda m: None)
    for key in ("test_error", "train_error", "auc", "curve", "meta_steps", "best_val_error", "eval_steps"):
        assert resumed[key] == whole[key], key

    from helpers.torchrun import records  # metrics.jsonl without the times

    assert records(tmp_path / "cut") == records(tmp_path / "whole")


def test_cli_train_and_report_run_multicv(pool_dir, tmp_path, capsys):
    from leap.cli import main

    out = tmp_path / "cli"
    args = ["train", "--benchmark", "multicv", "--held-out", "cifar10", "--method", "hat", "--out", str(out / "hat"),
            "--data-dir", str(pool_dir), "--meta-steps", "1", "--meta-batch", "2", "--task-batch", "8",
            "--eval-batch", "8", "--max-epochs", "1", "--eval-epochs", "1", "--val-size", "6", "--no-progress"]
    assert main(args) == 0
    assert "cifar10/hat: test error" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert (out / "multicv.md").is_file()


# Meta-batch 3 over 2 ranks under torchrun: rank 0 trains tasks 0 and 1 of each meta-step, rank 1 task 2.
# One thread in every process: θ0 is bitwise reproducible at a fixed thread count only, and the
# thread policy gives a Multi-CV command the machine's free cores (torchrun's workers, one each).
# Measured on this tiny run: 1 vs 2 threads moves θ0 by up to 0.038 after 2 Adam meta-steps
# (docs/reliability.md), so without --threads these tests depended on the machine's load.
MULTICV_RUN = ["train", "--benchmark", "multicv", "--held-out", "gtsrb", "--method", "leap", "--meta-steps", "2",
               "--meta-batch", "3", "--task-batch", "8", "--eval-batch", "8", "--max-epochs", "1", "--eval-epochs", "2",
               "--val-size", "6", "--check-every", "2", "--patience", "3", "--no-progress", "--threads", "1"]


def theta0(run: Path) -> dict[str, torch.Tensor]:
    """Leap's θ0 in the run's last checkpoint (Multi-CV writes no init file)."""
    learner = load_checkpoint(list_checkpoints(run / "checkpoints")[-1][1])["method"]["learner"]
    return {k: v for k, v in learner.items() if k.startswith("init.")}


def test_leap_pretraining_split_over_two_processes_gives_the_theta0_and_result_of_one_process(pool_dir, tmp_path):
    from helpers.torchrun import LIMIT_S, assert_same_records, records, torchrun
    from leap.cli import main
    from leap.engine.rundir import release

    args = [*MULTICV_RUN, "--data-dir", str(pool_dir)]
    alone, two = tmp_path / "alone", tmp_path / "two"
    assert main([*args, "--out", str(alone)]) == 0
    release(alone)
    proc = subprocess.run(torchrun("-m", "leap", *args, "--out", str(two)), capture_output=True, text=True,
                          timeout=LIMIT_S)
    assert proc.returncode == 0, proc.stderr
    a, b = theta0(alone), theta0(two)
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert_same_records(records(two), records(alone))  # the tasks' errors and steps, gathered from both ranks
    # Rank 0 alone evaluated the held-out dataset and wrote result.json.
    assert proc.stdout.count("gtsrb/leap: test error") == 1
    got, want = (json.loads((run / "result.json").read_text()) for run in (two, alone))
    assert got["test_error"] == pytest.approx(want["test_error"], abs=1e-6)


def test_a_sigterm_on_one_rank_stops_every_rank_after_the_same_meta_step_and_the_resumed_run_is_exact(
        pool_dir, tmp_path):
    from helpers.torchrun import LIMIT_S, assert_same_records, fault_env, finish, launch, records
    from leap.cli import main
    from leap.engine.rundir import release

    args = [*MULTICV_RUN, "--data-dir", str(pool_dir), "--meta-steps", "3", "--dist-timeout", "600"]
    alone, two = tmp_path / "alone", tmp_path / "two"
    assert main([*args, "--out", str(alone)]) == 0
    release(alone)
    (status0, err0), (status1, err1) = finish(launch([*args, "--out", str(two)], fault_env("sigterm", 1, 2)), LIMIT_S)
    assert status0 == status1 == 128 + signal.SIGTERM, err0 + err1
    assert [r["step"] for r in records(two)] == [1, 2] and not (two / "result.json").exists()
    (status0, err0), (status1, err1) = finish(launch([*args, "--out", str(two)], dict(os.environ)), LIMIT_S)
    assert status0 == status1 == 0, err0 + err1
    a, b = theta0(alone), theta0(two)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert_same_records(records(two), records(alone))


def test_a_run_continued_with_another_meta_lr_records_the_change_and_equals_that_config_trained_afresh(
        pool_dir, tmp_path):
    # As after a diverged θ0: the run continues from its newest checkpoint at the new rate,
    # config.json records [from_step, lr], and that config trained from scratch is the same run.
    from leap.cli import main

    run = tmp_path / "run"
    args = [*MULTICV_RUN, "--data-dir", str(pool_dir), "--out", str(run)]
    assert main(args) == 0  # 2 meta-steps at Adam 0.01
    assert main([*args, "--meta-steps", "3", "--meta-lr", "0.001"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["meta_lr_changes"] == [[2, 0.001]] and config["meta_lr"] == 0.01
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    with thread_policy(1):  # the thread count of the run above
        afresh = run_multicv(MultiCVConfig.from_dict(config), tmp_path / "afresh", log=lambda m: None)
    a, b = theta0(run), theta0(tmp_path / "afresh")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "result.json").read_text())["test_error"] == afresh["test_error"]
    assert main([*args, "--meta-steps", "3"]) == 0  # without --meta-lr: the recorded change is kept
    assert json.loads((run / "config.json").read_text())["meta_lr_changes"] == [[2, 0.001]]


@pytest.mark.parametrize("method", ["finetune", "hat", "progressive", "none"])
def test_methods_that_train_one_network_task_after_task_refuse_torchrun_in_one_line(pool_dir, tmp_path, capsys,
                                                                                     monkeypatch, method):
    from leap.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun starts each process
    monkeypatch.setattr("leap.cli.faulthandler.enable", lambda: None)  # needs a real stderr, not capsys's
    args = [*MULTICV_RUN, "--data-dir", str(pool_dir), "--method", method, "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be split over processes: run it without torchrun" in err, err
    assert not (tmp_path / "run").exists()


def test_cli_reports_bad_multicv_input_in_one_line_with_status_2(pool_dir, tmp_path, capsys):
    from leap.cli import main

    base = ["train", "--benchmark", "multicv", "--out", str(tmp_path / "x"), "--data-dir", str(pool_dir)]
    assert main(base) == 2
    assert "needs --held-out" in capsys.readouterr().err
    assert main([*base, "--held-out", "svhn"]) == 2
    assert "not in the pool" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["held-out", "device", "damaged pool dataset"])
def test_bad_multicv_input_is_refused_before_anything_is_written(pool_dir, tmp_path, capsys, bad):
    from leap.cli import main

    data = tmp_path / "data"
    shutil.copytree(pool_dir, data)
    out = tmp_path / "run"
    args = ["train", "--benchmark", "multicv", "--held-out", "mnist", "--method", "leap", "--out", str(out),
            "--data-dir", str(data), "--meta-steps", "1", "--meta-batch", "2", "--no-progress"]
    if bad == "held-out":
        args[args.index("mnist")] = "nosuch"
    elif bad == "device":
        args += ["--device", "cuda:7"]
    else:  # the pool's cifar10.zip cut in half: found before the run writes, not after pretraining
        blob = (data / "cifar10.zip").read_bytes()
        (data / "cifar10.zip").write_bytes(blob[: len(blob) // 2])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leap: error: ") and "\n" not in err and "Traceback" not in err, err
    assert not out.exists()


# ---------------------------------------------------------------------- the shared data, when present
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=NO_SHARED)


@pytest.fixture(scope="module")
def shared_sources():
    if not SHARED.is_dir():
        pytest.skip(NO_SHARED)
    return discover_datasets(SHARED)


@needs_shared
def test_shared_directory_holds_the_five_obtainable_datasets(shared_sources):
    assert {n: s.kind for n, s in shared_sources.items()} == {
        "cifar10": "imagefolder", "fashion-mnist": "idx", "gtsrb": "gtsrb", "mnist": "idx", "notmnist": "idx"}


@needs_shared
@pytest.mark.parametrize("name, train, test, classes", [
    ("fashion-mnist", 60_000, 10_000, 10), ("mnist", None, 10_000, 10), ("notmnist", None, 10_000, 10),
    ("cifar10", 50_000, 10_000, 10), ("gtsrb", 39_209, 12_630, 43),
])
def test_shared_dataset_counts_match_its_readme(shared_sources, name, train, test, classes):
    data = load_dataset(shared_sources[name])
    assert (None if data.train_y is None else len(data.train_y)) == train
    assert len(data.test_y) == test and len(data.classes) == classes
    assert data.test_x.shape[1:] == ((1, 32, 32) if name in ("fashion-mnist", "mnist", "notmnist") else (3, 32, 32))
    if name == "gtsrb":
        assert np.bincount(data.train_y)[:5].tolist() == [210, 2220, 2250, 1410, 1980]
        assert np.bincount(data.test_y)[-3:].tolist() == [90, 60, 90]
    if name == "notmnist":
        assert np.bincount(data.test_y).tolist() == [1000] * 10
    if name == "cifar10":
        assert data.classes[:2] == ["airplane", "automobile"]


@needs_shared
def test_shared_mnist_is_split_8000_2000_and_says_so(shared_sources):
    s = make_splits(load_dataset(shared_sources["mnist"]), val_size=800)
    assert s.sizes() == {"train": 7200, "val": 800, "test": 2000}
    assert "8,000 train / 2,000 test" in s.notes[0]


def test_environment_variable_names_the_data_directory(tmp_path, monkeypatch):
    write_idx(tmp_path, "mnist")
    monkeypatch.setenv(mc.ENV_VAR, str(tmp_path))
    assert MultiCV().names == ["mnist"]
    monkeypatch.delenv(mc.ENV_VAR)
    with pytest.raises(FileNotFoundError, match=mc.ENV_VAR):
        MultiCV()


def test_refused_and_unknown_entries_do_not_stop_discovery(tmp_path):
    (tmp_path / "empty").mkdir()
    os.makedirs(tmp_path / "nested" / "deeper")
    write_idx(tmp_path, "mnist")
    assert list(discover_datasets(tmp_path)) == ["mnist"]


def _without_times(value):
    if isinstance(value, dict):
        measured = {k for k in value if isinstance(k, str) and ("seconds" in k or k in MEASURED_KEYS)}
        return {k: _without_times(v) for k, v in value.items() if k not in measured}
    return [_without_times(v) for v in value] if isinstance(value, list) else value


def _assert_same_state(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where  # NaN equals NaN here


@pytest.mark.parametrize("method", ["leap", "finetune", "hat", "progressive"])
def test_a_run_killed_by_sigkill_then_run_again_ends_byte_identical_to_an_uninterrupted_one(pool_dir, tmp_path,
                                                                                              method):
    # kill -9 (an out-of-memory kill, a lost node) just before meta-step 3: the same command
    # again resumes from the checkpoint of meta-step 2 and ends with the same pretrained state
    # and the same result.json (times aside) as a run never interrupted.
    from helpers.torchrun import FAULT_INJECTION, LIMIT_S, fault_env

    args = [*MULTICV_RUN, "--method", method, "--meta-steps", "4", "--data-dir", str(pool_dir)]
    runs = {}
    for name, faults in (("whole", [None]), ("killed", ["kill", None])):
        out = tmp_path / name
        for fault in faults:
            env = fault_env(fault, rank=0, step=3) if fault else {k: v for k, v in os.environ.items()
                                                                  if not k.startswith("LEAP_FAULT")}
            proc = subprocess.run([sys.executable, str(FAULT_INJECTION), *args, "--out", str(out)], env=env,
                                  capture_output=True, text=True, timeout=LIMIT_S)
            if fault == "kill":
                assert proc.returncode == -signal.SIGKILL, proc.stderr
                assert not (out / "result.json").exists()
                assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
            else:
                assert proc.returncode == 0, proc.stderr
        runs[name] = out
    whole, killed = runs["whole"], runs["killed"]
    results = {name: _without_times(json.loads((out / "result.json").read_text())) for name, out in runs.items()}
    for name, out in runs.items():  # each names its own newest checkpoint, whose bytes hold wall times too
        digest = results[name].pop("pretrained_sha256")
        assert digest == file_sha256(list_checkpoints(out / "checkpoints")[-1][1])
    assert results["killed"] == results["whole"]
    a = load_checkpoint(list_checkpoints(whole / "checkpoints")[-1][1])
    b = load_checkpoint(list_checkpoints(killed / "checkpoints")[-1][1])
    for state in (a, b):
        # The global streams (Python, NumPy, torch: torch 2.13 seeds its default generator from
        # entropy in each process) are each process's own: Multi-CV draws from derived
        # generators and seeds module inits in a forked stream, never from these.
        del state["rng"]
    _assert_same_state(_without_times(a), _without_times(b))


@pytest.mark.parametrize("method", ["none", "leap"])
def test_a_run_killed_by_sigkill_during_its_held_out_evaluation_then_run_again_ends_with_the_same_result(
        pool_dir, tmp_path, method):
    # The held-out evaluation writes no checkpoint (it is one task): kill -9 in the middle of
    # it, and the same command again evaluates afresh from the pretrained state and ends
    # with the result of a run never interrupted. For no pretraining this is the whole run.
    from helpers.torchrun import FAULT_INJECTION, LIMIT_S

    args = [*MULTICV_RUN, "--method", method, "--data-dir", str(pool_dir)]
    plain = {k: v for k, v in os.environ.items() if not k.startswith("LEAP_FAULT")}
    results = {}
    for name, kills in (("whole", 0), ("killed", 1)):
        out = tmp_path / name
        for env in [{**plain, "LEAP_FAULT_EVAL_CHECK": "2"}] * kills + [plain]:
            proc = subprocess.run([sys.executable, str(FAULT_INJECTION), *args, "--out", str(out)], env=env,
                                  capture_output=True, text=True, timeout=LIMIT_S)
            if "LEAP_FAULT_EVAL_CHECK" in env:
                assert proc.returncode == -signal.SIGKILL, proc.stderr
                assert not (out / "result.json").exists()
            else:
                assert proc.returncode == 0, proc.stderr
        results[name] = _without_times(json.loads((out / "result.json").read_text()))
        results[name].pop("pretrained_sha256", None)  # the checkpoint's bytes hold wall times
    assert results["killed"]["eval_steps"] >= 4  # killed at the second check of every 2 steps: mid-training
    assert results["killed"] == results["whole"]


@pytest.mark.parametrize("option", ["--task-batch", "--eval-batch"])
def test_a_minibatch_beyond_the_machines_memory_is_refused_in_one_line_before_anything_is_written(
        pool_dir, tmp_path, capsys, monkeypatch, option):
    # A batch beyond a training split trains on the whole split at once: on CIFAR-10 with
    # --task-batch 1000000000 that was an out-of-memory kill after config.json was written.
    import leap.engine.memory as memory
    from leap.cli import main
    from leap.models import ConvNet

    # A machine where the run's own minibatches of 8 fit, and a whole training split does not.
    fits = memory.estimate_bytes(ConvNet(in_channels=3, num_classes=10, image_size=32), torch.zeros(1, 3, 32, 32), 8)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2 * fits)
    out = tmp_path / "run"
    assert main([*MULTICV_RUN, "--data-dir", str(pool_dir), option, "1000000000", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"({option} 1000000000) needs about" in err and f"use a smaller {option}" in err
    assert not out.exists()


def test_the_loops_advice_to_continue_with_resume_holds_for_multicv(pool_dir, tmp_path):
    # A stopped Multi-CV run continues when the same command runs again; --resume, which the
    # loop's messages name for every experiment, is accepted and does the same.
    from leap.cli import main

    args = [*MULTICV_RUN, "--data-dir", str(pool_dir), "--out", str(tmp_path / "run")]
    assert main([*args, "--meta-steps", "1"]) == 0
    assert main([*args, "--meta-steps", "2", "--resume"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]


def test_the_report_shows_leaps_meta_objective_per_pretraining_dataset_early_and_late(pool_dir, tmp_path, capsys):
    # Issue 27, point 1b: Leap's meta-training is shown by its meta-objective (each task's
    # path, eq. 5), read per pretraining dataset because a task's path depends on its dataset.
    from leap.cli import main

    out = tmp_path / "sweep"
    args = ["train", "--benchmark", "multicv", "--held-out", "cifar10", "--method", "leap", "--out", str(out / "leap"),
            "--data-dir", str(pool_dir), "--meta-steps", "3", "--meta-batch", "4", "--task-batch", "8",
            "--eval-batch", "8", "--max-epochs", "1", "--eval-epochs", "1", "--val-size", "6", "--no-progress"]
    assert main(args) == 0
    assert main(["report", str(out)]) == 0
    report = (out / "multicv.md").read_text()
    assert "## Leap's meta-training" in report and (out / "multicv-meta.png").stat().st_size > 0
    records = [json.loads(line) for line in (out / "leap" / "metrics.jsonl").read_text().splitlines()]
    drawn = {name for r in records for name in r["tasks"]}
    section = report[report.index("## Leap's meta-training"):]
    rows = [line for line in section.splitlines() if line.startswith("| Cifar10 |")]
    first = next(r for r in records if r["step"] == 1)
    # every row is a dataset drawn both in the first and in the last meta-step (20% of 3 rounds to 1)
    assert rows and all(line.split("|")[2].strip() in {display_name(d) for d in drawn} for line in rows)
    last = next(r for r in records if r["step"] == 3)
    for line in rows:
        name = next(d for d in drawn if display_name(d) == line.split("|")[2].strip())
        early = [p for n, p in zip(first["tasks"], first["task_paths"], strict=True) if n == name]
        late = [p for n, p in zip(last["tasks"], last["task_paths"], strict=True) if n == name]
        assert early and late  # a row compares tasks of the first meta-step with tasks of the last
        assert float(line.split("|")[3].split()[0]) == pytest.approx(sum(early) / len(early), abs=0.006)
        assert float(line.split("|")[4].split()[0]) == pytest.approx(sum(late) / len(late), abs=0.006)
    # a dataset drawn at only one end is named, not dropped in silence
    for name in drawn:
        if (name in first["tasks"]) != (name in last["tasks"]):
            assert f"{display_name(name)} (held out Cifar10: no task" in section
