"""The Omniglot task family: reading the official layout, the appendix-D protocol
(alphabets as 20-way tasks, splits, held-out drawings, augmentation), the decode cache,
and clear errors for incomplete data.

Most tests use a small synthetic dataset in the official layout (105 x 105 1-bit PNGs,
20 drawings per character): 9 alphabets, of which 2 have fewer than 20 characters, with
split sizes scaled down to ``num_pretrain=3, num_test=2`` (validation gets the other 2).
Drawing ``_YY`` of every character is a black horizontal bar whose height encodes YY,
so a test can tell from the pixels which drawings a task holds out. The last tests run
on the real data when it is present next to the repository.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image, ImageDraw

import leap.tasks as tasks_module
import leap.tasks.omniglot as om
import leap.tasks.omniglot.data as om_data
from leap.cli import main
from leap.models import ConvNet
from leap.tasks import make_benchmark
from leap.tasks.omniglot import (
    AffineParams,
    OmniglotBenchmark,
    OmniglotSizeWarning,
    apply_affine,
    random_affine,
    sample_affine_params,
)
from leap.util.errors import CorruptFileError

# The synthetic data is smaller than the official release by design; that warning is
# tested once, explicitly.
pytestmark = pytest.mark.filterwarnings("ignore::leap.tasks.omniglot.OmniglotSizeWarning")

# The real data: $LEAP_TEST_DATA/omniglot, else the checkout's ../shared/data/omniglot.
DATA = Path(os.environ.get("LEAP_TEST_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
REAL_DIR = DATA / "omniglot"

# alphabet -> number of characters; "Delta" and "Theta" (< 20) must be dropped.
BACKGROUND = {"Alpha": 20, "Beta": 22, "Gamma": 20, "Delta": 5}
EVALUATION = {"Epsilon": 21, "Zeta": 20, "Eta": 24, "Theta": 19, "Iota": 20}
KEPT = {name for part in (BACKGROUND, EVALUATION) for name, n in part.items() if n >= 20}
DROPPED = {"Delta", "Theta"}
NUM_CHARACTERS = sum(BACKGROUND.values()) + sum(EVALUATION.values())
# Validation gets the remaining 7 - 5 = 2. The smooth pipeline keeps strokes high on a
# zero background, so the pixel sums below find the bars; ``released`` tests the default.
SMALL = dict(num_pretrain=3, num_test=2, pipeline="smooth")


def drawing_png(drawing: int) -> bytes:
    """Drawing ``drawing`` (1..20): black strokes on white like the official PNGs, here
    a full-width bar over rows [5 (drawing - 1), 5 drawing)."""
    im = Image.new("1", (105, 105), 1)
    ImageDraw.Draw(im).rectangle([0, 5 * (drawing - 1), 104, 5 * drawing - 1], fill=0)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


PNGS = {d: drawing_png(d) for d in range(1, 21)}


def bar_drawing(image: torch.Tensor) -> int:
    """Recover the drawing number from a decoded, unaugmented (1, 28, 28) image: the
    bar's row centroid, mapped back to 105-pixel rows."""
    rows = image[0].sum(1)
    centre = float((rows * torch.arange(28.0)).sum() / rows.sum()) + 0.5  # in 28-pixel units
    return round((centre * 105 / 28 - 2.5) / 5) + 1


def write_part(root: Path, part: str, alphabets: dict[str, int], first_id: int = 1, drawings: int = 20) -> int:
    """Write ``root/part/<Alphabet>/characterNN/XXXX_YY.png``; returns the next character id."""
    char_id = first_id
    for alphabet, num_chars in alphabets.items():
        for j in range(1, num_chars + 1):
            folder = root / part / alphabet / f"character{j:02d}"
            folder.mkdir(parents=True)
            for d in range(1, drawings + 1):
                (folder / f"{char_id:04d}_{d:02d}.png").write_bytes(PNGS[d])
            char_id += 1
    return char_id


def zip_part(folder_root: Path, part: str, dest: Path) -> Path:
    """Zip ``folder_root/part`` as the official archive ``dest/part.zip`` (with directory entries)."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{part}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted((folder_root / part).rglob("*")):
            z.write(f, f.relative_to(folder_root).as_posix())
    return path


def write_dataset(root: Path) -> Path:
    next_id = write_part(root, "images_background", BACKGROUND)
    write_part(root, "images_evaluation", EVALUATION, first_id=next_id)
    return root


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> SimpleNamespace:
    """The synthetic dataset as extracted folders and as archives."""
    folders = write_dataset(tmp_path_factory.mktemp("omniglot-folders"))
    zips = tmp_path_factory.mktemp("omniglot-zips")
    for part in om.PARTS:
        zip_part(folders, part, zips)
    return SimpleNamespace(folders=folders, zips=zips, cache=tmp_path_factory.mktemp("omniglot-cache"))


@pytest.fixture(scope="session")
def bench(data) -> OmniglotBenchmark:
    """The smooth pipeline: strokes high on a zero background, so pixel sums find the bars."""
    return OmniglotBenchmark(data.zips, seed=0, cache_dir=data.cache, **SMALL)


@pytest.fixture(scope="session")
def released(data) -> OmniglotBenchmark:
    """The default pipeline, the authors' code's."""
    return OmniglotBenchmark(data.zips, seed=0, cache_dir=data.cache, **{**SMALL, "pipeline": "released"})


def draw(bench: OmniglotBenchmark, split: str = "train", source: int = 0, seed: int = 0, task_seed: int = 0):
    return bench.task(split, source, torch.Generator().manual_seed(seed), task_seed)


def source_of(bench: OmniglotBenchmark, alphabet: str) -> tuple[str, int]:
    for split in ("train", "val", "test"):
        if alphabet in bench.split_alphabets(split):
            return split, bench.split_alphabets(split).index(alphabet)
    raise AssertionError(f"{alphabet} is in no split")


# ---------------------------------------------------------------------- reading and the splits
def test_both_archives_are_read_in_full(bench):
    assert bench.num_alphabets == len(BACKGROUND) + len(EVALUATION)
    assert bench.num_characters == NUM_CHARACTERS
    assert bench.num_images == 20 * NUM_CHARACTERS
    assert bench.images.shape == (20 * NUM_CHARACTERS, 1, 28, 28) and bench.images.dtype == torch.uint8
    assert bench.image_alphabet.shape == bench.image_character.shape == (bench.num_images,)


def test_pixels_are_strokes_one_on_background_zero(bench):
    x = bench.pixels(torch.arange(20))  # the 20 drawings of the first character
    assert x.dtype == torch.float32 and x.min() == 0 and x.max() > 0.9
    assert x.mean() < 0.1  # mostly background: each bar covers 1/21 of the rows


def test_alphabets_with_fewer_than_20_characters_are_in_no_split(bench):
    in_splits = {name for split in ("train", "val", "test") for name in bench.split_alphabets(split)}
    assert in_splits == KEPT
    assert not in_splits & DROPPED


def test_split_sizes_are_num_pretrain_num_test_and_the_rest_for_validation(bench):
    assert bench.num_sources("train") == 3
    assert bench.num_sources("test") == 2
    assert bench.num_sources("val") == len(KEPT) - 3 - 2


def test_splits_are_disjoint(bench):
    train, val, test = (set(bench.split_alphabets(s)) for s in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test


def test_split_is_deterministic_given_the_seed(data, bench):
    again = OmniglotBenchmark(data.zips, seed=0, cache_dir=data.cache, **SMALL)
    assert again.splits == bench.splits


def test_split_differs_under_another_seed(data, bench):
    other = OmniglotBenchmark(data.zips, seed=1, cache_dir=data.cache, **SMALL)
    assert other.splits != bench.splits
    assert {a for v in other.splits.values() for a in v} == {a for v in bench.splits.values() for a in v}


def test_default_split_sizes_are_the_papers_25_pretrain_and_10_test(data):
    with pytest.raises(ValueError, match=r"7 alphabets with >= 20 characters.*num_pretrain=25 \+ num_test=10"):
        OmniglotBenchmark(data.zips, cache_dir=data.cache)


def test_folders_archives_and_torchvision_layout_give_the_same_data(data, bench, tmp_path):
    from_folders = OmniglotBenchmark(data.folders, cache_dir=tmp_path / "c1", **SMALL)
    tv = tmp_path / "tv"
    shutil.copytree(data.zips, tv / "omniglot-py")
    from_tv = OmniglotBenchmark(tv, cache_dir=tmp_path / "c2", **SMALL)
    for other in (from_folders, from_tv):
        assert torch.equal(other.images, bench.images)
        assert other.character_names == bench.character_names
        assert other.splits == bench.splits


# ---------------------------------------------------------------------- tasks
def test_task_has_20_classes_with_15_train_and_5_test_drawings_each(bench):
    task = draw(bench)
    assert task.num_classes == 20
    assert torch.equal(torch.bincount(task.train_y, minlength=20), torch.full((20,), 15))
    assert torch.equal(torch.bincount(task.test_y, minlength=20), torch.full((20,), 5))


def test_task_tensors_are_float_in_unit_interval_with_expected_shapes(bench):
    task = draw(bench)
    assert task.train_x.shape == (300, 1, 28, 28) and task.test_x.shape == (100, 1, 28, 28)
    for x in (task.train_x, task.test_x):
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
        assert x.device == bench.device
    assert task.train_y.dtype == task.test_y.dtype == torch.int64


def test_task_name_is_its_alphabet_and_source_its_index(bench):
    for source, alphabet in enumerate(bench.split_alphabets("val")):
        task = draw(bench, "val", source)
        assert task.name == alphabet and task.source == source


def test_task_draws_20_distinct_characters_of_its_alphabet(bench):
    split, source = source_of(bench, "Eta")  # 24 characters: a real draw, not all of them
    chars = draw(bench, split, source).meta["characters"]
    assert len(set(chars)) == 20
    assert all(c.split("/")[1] == "Eta" for c in chars)


def test_each_label_is_one_character(bench):
    task = draw(bench)
    train_chars = bench.image_character[task.meta["train_index"]].view(20, 15)
    test_chars = bench.image_character[task.meta["test_index"]].view(20, 5)
    assert (train_chars == train_chars[:, :1]).all() and (test_chars == train_chars[:, :1]).all()
    assert len(set(train_chars[:, 0].tolist())) == 20
    assert [bench.character_names[c] for c in train_chars[:, 0].tolist()] == task.meta["characters"]


def test_test_drawings_are_never_in_any_training_set_of_the_alphabet(bench):
    split, source = source_of(bench, "Eta")
    train, test = set(), set()
    for seed in range(10):
        task = draw(bench, split, source, seed)
        train |= set(task.meta["train_index"].tolist())
        test |= set(task.meta["test_index"].tolist())
    assert not train & test


def test_held_out_drawings_are_the_last_five_in_file_order(bench):
    task = draw(bench)
    train = {bar_drawing(x) for x in bench.pixels(task.meta["train_index"])}
    test = {bar_drawing(x) for x in bench.pixels(task.meta["test_index"])}
    assert train == set(range(1, 16)) and test == set(range(16, 21))


def test_task_draws_are_deterministic_given_the_generator(bench):
    a, b = draw(bench, seed=3), draw(bench, seed=3)
    assert a.meta["characters"] == b.meta["characters"]
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_a_task_revisited_has_the_same_characters_and_labels_and_fresh_augmentation(bench):
    split, source = source_of(bench, "Eta")  # 24 characters: which 20, in which order, is a draw
    first, again = draw(bench, split, source, seed=0), draw(bench, split, source, seed=1)
    assert first.meta["characters"] == again.meta["characters"]
    assert torch.equal(first.meta["train_index"], again.meta["train_index"])
    assert torch.equal(first.train_y, again.train_y) and torch.equal(first.train_x, again.train_x)
    assert not torch.equal(first.test_x, again.test_x)  # each visit augments its test set anew


def test_another_task_seed_draws_other_characters_or_another_label_order(bench):
    split, source = source_of(bench, "Eta")
    chars = {tuple(draw(bench, split, source, task_seed=s).meta["characters"]) for s in range(4)}
    assert len(chars) == 4


def test_released_pipeline_is_black_strokes_on_white_resized_by_nearest_neighbour(released, bench):
    x = released.pixels(torch.arange(20))  # the 20 drawings of the first character
    assert set(x.unique().tolist()) == {0.0, 1.0}  # nearest neighbour on a 1-bit image: no grey
    assert x.mean() > 0.9  # mostly white background; the bar is black


def test_released_pipeline_augments_by_nearest_neighbour_with_fill_zero_and_uniform_bn_scales(released):
    task = draw(released)
    assert task.augment == om.RandomAffine("nearest")
    x, _ = task.sample(50, torch.Generator().manual_seed(0))
    assert set(x.unique().tolist()) <= {0.0, 1.0}  # nearest sampling creates no new values
    assert (x == 0).float().mean() > (task.train_x == 0).float().mean()  # corners filled with 0
    model = released.make_model()
    scales = torch.cat([m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert 0 <= scales.min() and scales.max() < 1 and scales.std() > 0.2  # U(0, 1), not ones
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_training_set_is_stored_unaugmented_and_augmented_per_minibatch(bench):
    task = draw(bench)
    assert torch.equal(task.train_x, bench.pixels(task.meta["train_index"]))
    assert task.augment == random_affine
    x, y = task.sample(20, torch.Generator().manual_seed(0))
    assert x.shape == (20, 1, 28, 28) and y.shape == (20,)
    # The same indices Task.sample drew, without the augmentation:
    idx = torch.randint(len(task.train_y), (20,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, task.train_y[idx]) and not torch.allclose(x, task.train_x[idx])


def test_test_set_is_augmented_once_at_task_creation(bench):
    task = draw(bench)
    raw = bench.pixels(task.meta["test_index"])
    changed = (task.test_x - raw).abs().flatten(1).amax(1) > 0.1
    assert changed.float().mean() > 0.9


def test_unknown_split_or_source_out_of_range_is_an_error(bench):
    with pytest.raises(ValueError, match="split must be one of"):
        draw(bench, "pretrain")
    with pytest.raises(ValueError, match=r"source must be in \[0, 3\)"):
        draw(bench, "train", 3)


def test_model_is_the_convnet_for_28x28_20_way(bench):
    model = bench.make_model()
    assert isinstance(model, ConvNet)
    assert model(draw(bench).train_x[:4]).shape == (4, 20)


def test_drawing_a_task_reads_and_decodes_nothing(bench, monkeypatch):
    # Tasks are gathered from the in-memory tensor (about 1 ms on one CPU core).
    monkeypatch.setattr(om_data, "_decode_png", lambda *a: pytest.fail("decoded while drawing a task"))
    monkeypatch.setattr(om_data._Source, "read", lambda *a: pytest.fail("read a file while drawing a task"))
    g = torch.Generator().manual_seed(0)
    for source in range(bench.num_sources("train")):
        bench.task("train", source, g)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tasks_and_augmentation_live_on_the_benchmark_device(data):
    bench = OmniglotBenchmark(data.zips, device="cuda", cache_dir=data.cache, **SMALL)
    assert bench.images.is_cuda
    for g in (torch.Generator().manual_seed(0), torch.Generator(device="cuda").manual_seed(0)):
        task = bench.task("train", 0, g)
        assert task.train_x.is_cuda and task.test_x.is_cuda and task.train_y.is_cuda
        x, y = task.sample(20, g)
        assert x.is_cuda and y.is_cuda and x.shape == (20, 1, 28, 28)


# ---------------------------------------------------------------------- augmentation
def params(n: int = 2, angle: float = 0.0, translate: tuple[float, float] = (0.0, 0.0), scale: float = 1.0):
    return AffineParams(torch.full((n,), angle), torch.tensor([translate] * n), torch.full((n,), scale))


def test_affine_params_lie_in_the_appendix_d_ranges():
    p = sample_affine_params(20_000, torch.Generator().manual_seed(0))
    assert p.angle.shape == p.scale.shape == (20_000,) and p.translate.shape == (20_000, 2)
    assert p.angle.min() >= 0 and p.angle.max() < 360
    assert p.translate.abs().max() <= 0.2
    assert p.scale.min() >= 0.8 and p.scale.max() <= 1.2
    # ... and cover them (uniform draws).
    assert p.angle.min() < 1 and p.angle.max() > 359
    assert p.translate.min() < -0.199 and p.translate.max() > 0.199
    assert p.scale.min() < 0.801 and p.scale.max() > 1.199


def test_random_affine_preserves_shape_dtype_and_device():
    x = torch.rand(5, 1, 28, 28)
    y = random_affine(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device


def test_random_affine_is_deterministic_given_the_generator_and_differs_per_image():
    x = torch.rand(1, 1, 28, 28).expand(4, -1, -1, -1)
    a = random_affine(x, torch.Generator().manual_seed(1))
    b = random_affine(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])


def test_identity_params_return_the_input():
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(apply_affine(x, params()), x, atol=1e-5)


def test_translation_is_a_fraction_of_the_image_size():
    x = torch.rand(2, 1, 28, 28)
    right = apply_affine(x, params(translate=(0.25, 0.0)))  # 7 pixels
    assert torch.allclose(right[..., 7:], x[..., :-7], atol=1e-5) and right[..., :7].abs().max() == 0
    down = apply_affine(x, params(translate=(0.0, 0.25)))
    assert torch.allclose(down[..., 7:, :], x[..., :-7, :], atol=1e-5)


def test_rotation_by_90_degrees_is_a_clockwise_quarter_turn():
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(apply_affine(x, params(angle=90.0)), torch.rot90(x, -1, (2, 3)), atol=1e-5)


def test_scale_shrinks_the_image_about_its_centre():
    ones = torch.ones(1, 1, 28, 28)
    half = apply_affine(ones, params(1, scale=0.5))
    assert half.mean().item() == pytest.approx(0.25, abs=0.02)
    assert half[0, 0, 14, 14] == 1 and half[0, 0, 0, 0] == 0


# ---------------------------------------------------------------------- the decode cache
def write_tiny_dataset(root: Path) -> Path:
    """Three 20-character alphabets: enough for ``TINY`` splits (1 / 1 / 1), quick to decode."""
    next_id = write_part(root, "images_background", {"Alpha": 20, "Beta": 20})
    write_part(root, "images_evaluation", {"Gamma": 20}, first_id=next_id)
    return root


TINY = dict(num_pretrain=1, num_test=1, pipeline="smooth")


def test_second_construction_reads_the_cache_without_decoding(data, bench, monkeypatch):
    monkeypatch.setattr(om_data, "_decode_png", lambda *a: pytest.fail("decoded again despite the cache"))
    again = OmniglotBenchmark(data.zips, cache_dir=data.cache, **SMALL)  # ``bench`` wrote the cache
    assert torch.equal(again.images, bench.images) and again.splits == bench.splits


def test_cache_is_one_npz_in_the_user_cache_and_nothing_is_written_into_the_data(tmp_path, monkeypatch):
    root = write_tiny_dataset(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.delenv("LEAP_CACHE_DIR", raising=False)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    OmniglotBenchmark(root, **TINY)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # the data directory is untouched
    assert len(list((tmp_path / "user-cache" / "leap").glob("omniglot-*.npz"))) == 1


def test_leap_cache_dir_overrides_the_user_cache(tmp_path, monkeypatch):
    root = write_tiny_dataset(tmp_path / "data")
    monkeypatch.setenv("LEAP_CACHE_DIR", str(tmp_path / "mine"))
    OmniglotBenchmark(root, **TINY)
    assert len(list((tmp_path / "mine").glob("omniglot-*.npz"))) == 1


def test_changed_source_invalidates_the_cache(tmp_path, monkeypatch):
    root = write_tiny_dataset(tmp_path / "data")
    before = OmniglotBenchmark(root, cache_dir=tmp_path / "cache", **TINY)
    (root / "images_background" / "Alpha" / "character01" / "0001_01.png").write_bytes(PNGS[20])
    decoded = []
    original = om_data._decode_png
    monkeypatch.setattr(om_data, "_decode_png", lambda *a: decoded.append(1) or original(*a))
    after = OmniglotBenchmark(root, cache_dir=tmp_path / "cache", **TINY)
    assert len(decoded) == after.num_images
    assert bar_drawing(before.pixels(torch.tensor([0]))[0]) == 1
    assert bar_drawing(after.pixels(torch.tensor([0]))[0]) == 20  # drawing 1 now shows drawing 20's bar
    assert len(list((tmp_path / "cache").glob("omniglot-*.npz"))) == 1  # the stale file is gone


def test_unreadable_cache_is_decoded_again(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    OmniglotBenchmark(root, cache_dir=tmp_path / "cache", **TINY)
    (cache_file,) = (tmp_path / "cache").glob("omniglot-*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable Omniglot cache"):
        bench = OmniglotBenchmark(root, cache_dir=tmp_path / "cache", **TINY)
    assert bench.num_images == 3 * 20 * 20


# ---------------------------------------------------------------------- errors
def test_missing_directory_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing}: no such directory")):
        OmniglotBenchmark(missing)


def test_no_directory_and_no_environment_variable_says_what_to_do(monkeypatch):
    monkeypatch.delenv("LEAP_OMNIGLOT_DIR", raising=False)
    expected = r"LEAP_OMNIGLOT_DIR.*images_background\.zip and images_evaluation\.zip \(official Omniglot archives\)"
    with pytest.raises(FileNotFoundError, match=expected):
        OmniglotBenchmark()


def test_environment_variable_names_the_directory(data, monkeypatch):
    monkeypatch.setenv("LEAP_OMNIGLOT_DIR", str(data.zips))
    assert OmniglotBenchmark(cache_dir=data.cache, **SMALL).num_characters == NUM_CHARACTERS


def test_missing_archive_is_an_error_naming_the_expected_files(data, tmp_path):
    shutil.copy(data.zips / "images_background.zip", tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path}: found neither images_evaluation.zip")):
        OmniglotBenchmark(tmp_path)


def test_empty_folder_is_an_error_naming_it(tmp_path):
    for part in om.PARTS:
        (tmp_path / part).mkdir()
    with pytest.raises(CorruptFileError, match=re.escape(f"{tmp_path / 'images_background'}: no alphabets found")):
        OmniglotBenchmark(tmp_path)


def test_alphabet_folder_without_images_is_an_error_naming_it(tmp_path):
    write_part(tmp_path, "images_background", {"Alpha": 1})
    write_part(tmp_path, "images_evaluation", {"Beta": 1})
    (tmp_path / "images_evaluation" / "Empty" / "character01").mkdir(parents=True)
    with pytest.raises(CorruptFileError, match="images_evaluation: alphabet folder Empty/ holds no images"):
        OmniglotBenchmark(tmp_path)


def test_character_with_missing_drawings_is_an_error_naming_it(tmp_path):
    write_part(tmp_path, "images_background", {"Alpha": 1})
    write_part(tmp_path, "images_evaluation", {"Beta": 1}, drawings=19)
    with pytest.raises(CorruptFileError, match="Beta/character01/ holds 19 drawings, expected 20"):
        OmniglotBenchmark(tmp_path)


def test_truncated_zip_is_an_error_naming_it(data, tmp_path):
    shutil.copy(data.zips / "images_evaluation.zip", tmp_path)
    whole = (data.zips / "images_background.zip").read_bytes()
    (tmp_path / "images_background.zip").write_bytes(whole[: len(whole) // 2])
    expected = re.escape(f"{tmp_path / 'images_background.zip'}: not a readable zip archive, truncated or corrupt")
    with pytest.raises(CorruptFileError, match=expected):
        OmniglotBenchmark(tmp_path)


def test_corrupt_png_is_an_error_naming_it(tmp_path):
    write_part(tmp_path, "images_background", {"Alpha": 1})
    write_part(tmp_path, "images_evaluation", {"Beta": 1}, first_id=2)
    bad = tmp_path / "images_background" / "Alpha" / "character01" / "0001_07.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(CorruptFileError, match=re.escape(f"{bad}: not a readable PNG")):
        OmniglotBenchmark(tmp_path, cache_dir=tmp_path / "cache")


def test_data_smaller_than_the_official_release_is_never_loaded_silently(data):
    with pytest.warns(OmniglotSizeWarning, match="images_background holds 4 alphabets, 67 characters, 1340 images"):
        OmniglotBenchmark(data.zips, cache_dir=data.cache, **SMALL)


# ---------------------------------------------------------------------- wiring into runs
def test_registered_under_the_name_omniglot(data):
    bench = make_benchmark("omniglot", data_dir=data.zips, device="cpu", cache_dir=data.cache, **SMALL)
    assert isinstance(bench, OmniglotBenchmark) and bench.name == "omniglot" and bench.num_classes == 20


@pytest.mark.parametrize("method", ["leap", "reptile", "fomaml", "maml", "finetune", "none"])
def test_cli_trains_and_evaluates_every_method_on_omniglot(data, tmp_path, monkeypatch, method):
    # The CLI passes only device and data_dir; the small split sizes come in through the registry.
    small = functools.partial(OmniglotBenchmark, cache_dir=data.cache, **SMALL)
    monkeypatch.setitem(tasks_module._REGISTRY, "omniglot", small)
    out = tmp_path / "run"
    argv = ["train", "--benchmark", "omniglot", "--data-dir", str(data.zips), "--method", method,
            "--meta-steps", "2", "--meta-batch", "2", "--task-steps", "3", "--pretrain-tasks", "3",
            "--eval-steps", "3", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert (out / "init.safetensors").is_file()
    assert main(["evaluate", str(out)]) == 0
    result = json.loads((out / "eval-test.json").read_text())
    assert len(result["test_errors"]) == 2 and len(result["curve"]) == 3
    # The protocol is the authors' code's by default, and both files say so.
    config = json.loads((out / "config.json").read_text())
    assert (config["pipeline"], config["bn_eval"]) == ("released", "running")
    assert (result["pipeline"], result["bn_eval"]) == ("released", "running")


def test_the_smooth_pipeline_and_transductive_evaluation_are_options_recorded_with_the_run(data, tmp_path,
                                                                                           monkeypatch):
    small = functools.partial(OmniglotBenchmark, cache_dir=data.cache, **SMALL)
    monkeypatch.setitem(tasks_module._REGISTRY, "omniglot", small)
    out = tmp_path / "run"
    argv = ["train", "--benchmark", "omniglot", "--data-dir", str(data.zips), "--method", "none",
            "--pipeline", "smooth", "--bn-eval", "batch", "--pretrain-tasks", "3", "--eval-steps", "2",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0 and main(["evaluate", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    result = json.loads((out / "eval-test.json").read_text())
    assert (config["pipeline"], config["bn_eval"]) == (result["pipeline"], result["bn_eval"]) == ("smooth", "batch")


def test_omniglot_protocol_options_are_refused_on_other_benchmarks(tmp_path, capsys):
    assert main(["train", "--pipeline", "smooth", "--out", str(tmp_path / "run")]) == 2
    assert "--pipeline does not apply to --benchmark builtin (only to omniglot)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- the real data
@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("omniglot-real-cache")


@pytest.fixture(scope="session")
def real(real_cache) -> OmniglotBenchmark:
    """The real Omniglot, decoded once per test session (about 8 s on one core)."""
    if not (REAL_DIR / "images_background.zip").is_file():
        pytest.skip(f"Omniglot data not found at {REAL_DIR}: set LEAP_TEST_DATA to a directory holding "
                    "omniglot/images_background.zip to run the tests on the real data")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OmniglotSizeWarning)  # the real data is complete
        return OmniglotBenchmark(REAL_DIR, cache_dir=real_cache)


def test_real_data_has_50_alphabets_1623_characters_32460_images(real):
    assert (real.num_alphabets, real.num_characters, real.num_images) == (50, 1623, 32460)


def test_real_data_keeps_46_alphabets_split_25_10_11(real):
    assert len(real.kept_alphabets) == 46
    assert (real.num_sources("train"), real.num_sources("test"), real.num_sources("val")) == (25, 10, 11)
    dropped = set(real.alphabet_names) - {n for s in ("train", "val", "test") for n in real.split_alphabets(s)}
    assert dropped == {"Blackfoot_(Canadian_Aboriginal_Syllabics)", "Ojibwe_(Canadian_Aboriginal_Syllabics)",
                       "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Tagalog"}


def test_real_data_second_construction_reads_the_cache(real, real_cache, monkeypatch):
    monkeypatch.setattr(om_data, "_decode_png", lambda *a: pytest.fail("decoded again despite the cache"))
    again = OmniglotBenchmark(REAL_DIR, cache_dir=real_cache)
    assert again.splits == real.splits and torch.equal(again.images, real.images)
