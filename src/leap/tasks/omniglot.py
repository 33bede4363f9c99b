"""Omniglot as a task family: one 20-way classification task per alphabet (appendix D).

Data. The two official archives ``images_background.zip`` and ``images_evaluation.zip``
(``images_background/<Alphabet>/characterNN/XXXX_YY.png``, 105 x 105 1-bit PNGs), or
their extracted folders, in a directory the user names (also accepted one level down in
``omniglot-py/``, torchvision's layout). Every PNG is decoded once, downsampled to 28 x 28
and cached as one uint8 ``.npz`` keyed by the pipeline and the source files' names, sizes
and modification times; later constructions read the cache in well under a second. All
images then live in memory as one uint8 tensor (N, 1, 28, 28) on the benchmark's device
and a task is a gather from it.

Pipelines (the paper does not say; ``pipeline=``, ``--pipeline``):

- ``"released"`` (default), as the authors' code: the 1-bit image is resized with nearest
  neighbour (what Pillow does for 1-bit images), black strokes on white (not inverted),
  the augmentation samples with nearest neighbour and fills with 0, and batch-norm
  scales start from U(0, 1) (PyTorch 0.4's default).
- ``"smooth"``: Lanczos resize, inverted (strokes 1, background 0), bilinear
  augmentation with zero (background) fill, batch-norm scales 1.

Protocol (appendix D). The 50 alphabets of both archives are merged; alphabets with
fewer than 20 characters cannot form a 20-way task and are dropped (4 of 50, leaving
46). A shuffle of the kept alphabets, seeded by the benchmark's ``seed``, assigns the
first ``num_pretrain`` (25) to the pretraining pool (split ``"train"``; a run uses the
first N of them), the next ``num_test`` (10) to the held-out test tasks (``"test"``) and
the rest (11) to validation (``"val"``).

A task is one alphabet with 20 of its characters in a label order (labels 0..19), both
drawn once from ``(task_seed, split, alphabet)`` and kept for every visit, as in the
authors' code: a run meets the same 20-way problem each time it draws the alphabet, so
a head kept for an alphabet (multi-headed finetuning) always matches its labels. The
run's seed fixes the pretraining tasks, the evaluation seed the held-out ones. Each
character has 20 drawings, by 20 different people (the ``_YY`` in the file name); the
drawings ``_16`` to ``_20`` (the last five in file order) are the task's test set and
the other fifteen its training set. Fixing the held-out drawings per character, rather
than drawing them per task, means no test image is ever trained on in another draw of
the same alphabet.

Augmentation (appendix D). Every image, training and test alike, goes through a random
affine map: rotation uniform in [0, 360) degrees, translation uniform in [-0.2, 0.2] of
the width and height, scale uniform in [0.8, 1.2]. Training minibatches are augmented
afresh at every draw (``Task.augment``); a task's test set is augmented once per visit,
from that visit's generator, so evaluation is deterministic given the seed.

Evaluation (``bn_eval=``, ``--bn-eval``): ``"running"`` (default, the authors' code)
builds batch norm with running statistics, reset for every task, and classifies test
images in eval mode with the statistics of that task's training, so a prediction does not
depend on the other test images; ``"batch"`` normalizes with the statistics of the test
images themselves (transductive).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap.models import ConvNet
from leap.tasks.base import Task
from leap.tasks.cache import default_cache_dir, read_cache, write_cache
from leap.util.checks import positive_int
from leap.util.errors import CorruptFileError
from leap.util.files import atomic_write_bytes
from leap.util.seeding import derived_generator

PARTS = ("images_background", "images_evaluation")
SOURCE_SIZE = 105  # side of the official PNGs
IMAGE_SIZE = 28  # side after downsampling (appendix D)
DRAWINGS = 20  # drawings per character in the official release
TEST_DRAWINGS = 5  # held out per character: the last five in file order
NUM_CLASSES = 20
ENV_VAR = "LEAP_OMNIGLOT_DIR"
# (alphabets, characters, images) of the official release, to flag a partial dataset.
OFFICIAL_COUNTS = {"images_background": (30, 964, 19280), "images_evaluation": (20, 659, 13180)}
#: Image pipelines (module docstring): the authors' code's, and Lanczos with inversion.
PIPELINES = ("released", "smooth")
#: How test images are classified: batch norm with the task's running statistics, or
#: with the test batch's own statistics (transductive).
BN_EVAL = ("running", "batch")
# Bump when a decoded representation changes, so stale caches are not reused.
CACHE_FORMAT = {"released": "omniglot-v2-nearest28", "smooth": "omniglot-v1-lanczos28-inverted"}

# Augmentation ranges of appendix D.
ROTATION_DEGREES = 360.0
MAX_TRANSLATION = 0.2
SCALE_RANGE = (0.8, 1.2)


def _how_to(directory: Path | str) -> str:
    return (f"put images_background.zip and images_evaluation.zip (official Omniglot archives), "
            f"or their extracted folders, in {directory}")


class OmniglotSizeWarning(UserWarning):
    """The data holds fewer (or more) alphabets, characters or images than the official release."""


# ---------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class AffineParams:
    """Per-image parameters of the augmentation's affine map (the forward map, from the
    original image to the augmented one, about the image centre).

    ``angle`` (B,) degrees, positive turns clockwise as displayed (rows grow downwards);
    ``translate`` (B, 2) as fractions of (width, height), positive moves content
    right/down; ``scale`` (B,) magnification.
    """

    angle: Tensor
    translate: Tensor
    scale: Tensor

    def to(self, device: torch.device | str) -> AffineParams:
        return AffineParams(self.angle.to(device), self.translate.to(device), self.scale.to(device))


def sample_affine_params(n: int, generator: torch.Generator, device: torch.device | str | None = None) -> AffineParams:
    """Draw ``n`` maps from appendix D's ranges: rotation in [0, 360), translation in
    [-0.2, 0.2) per axis, scale in [0.8, 1.2). Randomness comes from ``generator`` only
    (drawn on its device), results are moved to ``device`` (default: the generator's)."""
    params = affine_params_from_uniforms(draw_affine_uniforms(n, generator))
    return params.to(device) if device is not None else params


def draw_affine_uniforms(n: int, generator: torch.Generator) -> Tensor:
    """The randomness of ``n`` maps: (n, 4) uniforms in [0, 1) from ``generator``, on its
    device (kept apart so that the batched engine draws exactly what
    :func:`sample_affine_params` draws, then converts all tasks' draws at once)."""
    return torch.rand(n, 4, generator=generator, device=generator.device)


def affine_params_from_uniforms(u: Tensor) -> AffineParams:
    """Appendix D's maps from (n, 4) uniforms in [0, 1): columns give the angle, the two
    translations and the scale. Elementwise, so it runs on any device and batch size."""
    # remainder: float32 rounding of u * 360 could give exactly 360 for u just below 1.
    angle = (u[:, 0] * ROTATION_DEGREES).remainder(ROTATION_DEGREES)
    translate = (u[:, 1:3] * 2 - 1) * MAX_TRANSLATION
    low, high = SCALE_RANGE
    scale = low + (high - low) * u[:, 3]
    return AffineParams(angle, translate, scale)


def affine_theta(params: AffineParams, height: int, width: int) -> Tensor:
    """The (B, 2, 3) matrices for :func:`torch.nn.functional.affine_grid` that realize
    ``params``. affine_grid maps *output* coordinates to *input* coordinates in
    normalized [-1, 1] units, so this is the inverse of the forward map; rotation is
    done in pixel units so that it stays a rotation on non-square images."""
    rad = torch.deg2rad(params.angle.float())
    cos, sin = torch.cos(rad), torch.sin(rad)
    inv_s = 1.0 / params.scale.float()
    # Inverse linear part in pixel units: (1/s) R(-angle).
    a11, a12 = cos * inv_s, sin * inv_s
    a21, a22 = -sin * inv_s, cos * inv_s
    # Conjugate by D = diag(W/2, H/2) to work in normalized units: D^-1 A D.
    ratio = width / height
    theta = torch.empty(len(rad), 2, 3, device=rad.device)
    theta[:, 0, 0] = a11
    theta[:, 0, 1] = a12 / ratio
    theta[:, 1, 0] = a21 * ratio
    theta[:, 1, 1] = a22
    # A shift of t (fraction of the size) is 2t in normalized units; input = A(out - 2t).
    t = params.translate.float() * 2
    theta[:, :, 2] = -(theta[:, :, :2] @ t.unsqueeze(-1)).squeeze(-1)
    return theta


def apply_affine(x: Tensor, params: AffineParams, mode: str = "bilinear") -> Tensor:
    """Warp each image of ``x`` (B, C, H, W) float by its map in ``params``, sampling
    with ``mode`` (``"bilinear"`` or ``"nearest"``); pixels that come from outside the
    image are 0. Returns (B, C, H, W), same dtype."""
    b, c, h, w = x.shape
    theta = affine_theta(params.to(x.device), h, w).to(x.dtype)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class RandomAffine:
    """Appendix D's augmentation as a ``Task.augment``: an independent random affine map
    per image of ``x`` (B, C, H, W) float, batched on ``x``'s device, sampled with
    ``mode``. ``aug(x, generator)`` returns (B, C, H, W)."""

    mode: str = "bilinear"

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if len(x) == 0:
            return x
        return apply_affine(x, sample_affine_params(len(x), generator, x.device), self.mode)

    # A tasks.base.SplitAugment: the batched engine draws every step's maps first.
    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        return draw_affine_uniforms(n, generator)

    def apply(self, x: Tensor, randomness: Tensor) -> Tensor:
        return apply_affine(x, affine_params_from_uniforms(randomness), self.mode)


#: The smooth pipeline's augmentation (bilinear); the released one samples nearest.
random_affine = RandomAffine("bilinear")
AUGMENTATION = {"released": RandomAffine("nearest"), "smooth": random_affine}


# ---------------------------------------------------------------------- reading the data
def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The Omniglot directory: ``data_dir``, else ``$LEAP_OMNIGLOT_DIR``; it must exist."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or None
        if data_dir is None:
            raise FileNotFoundError(
                f"no Omniglot directory given (pass data_dir / --data-dir, or set {ENV_VAR}); "
                + _how_to("that directory")
            )
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such directory; {_how_to(path)}")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a directory; {_how_to(path)}")
    return path


def _natural_key(name: str) -> list[int | str]:
    """Sort key that orders character2 before character10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


# Listing of one part: alphabet -> character -> [(file name, member key)].
Tree = dict[str, dict[str, list[tuple[str, str]]]]


class _Source:
    """One part (images_background or images_evaluation) as a zip or a folder."""

    def __init__(self, part: str, path: Path) -> None:
        self.part = part
        self.path = path
        self.is_zip = path.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._stats: list[str] = []  # fingerprint lines of a folder's files

    @property
    def where(self) -> str:
        """How errors name this source."""
        return f"{self.path} ({self.part}/ inside the archive)" if self.is_zip else str(self.path)

    def list(self) -> Tree:
        tree = self._list_zip() if self.is_zip else self._list_dir()
        _check_tree(tree, self)
        return tree

    def _open_zip(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
                raise CorruptFileError(f"{self.path}: not a readable zip archive, truncated or corrupt ({err}); "
                                       f"download {self.path.name} again") from err
        return self._zip

    def _list_zip(self) -> Tree:
        tree: Tree = {}
        for name in self._open_zip().namelist():
            parts = name.rstrip("/").split("/")
            if parts[0] != self.part or any(_hidden(p) for p in parts):
                continue
            # Directory entries register alphabets and characters, so empty ones are reported.
            if len(parts) >= 2:
                chars = tree.setdefault(parts[1], {})
                if len(parts) >= 3:
                    files = chars.setdefault(parts[2], [])
                    if len(parts) == 4 and not name.endswith("/") and parts[3].lower().endswith(".png"):
                        files.append((parts[3], name))
        return tree

    def _list_dir(self) -> Tree:
        tree: Tree = {}
        for alphabet in os.scandir(self.path):
            if _hidden(alphabet.name) or not alphabet.is_dir():
                continue
            chars = tree.setdefault(alphabet.name, {})
            for char in os.scandir(alphabet.path):
                if _hidden(char.name) or not char.is_dir():
                    continue
                files = chars.setdefault(char.name, [])
                for f in os.scandir(char.path):
                    if _hidden(f.name) or not f.name.lower().endswith(".png") or not f.is_file():
                        continue
                    st = f.stat()
                    files.append((f.name, f.path))
                    rel = f"{alphabet.name}/{char.name}/{f.name}"
                    self._stats.append(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}")
        return tree

    def fingerprint(self) -> list[str]:
        """Names, sizes and mtimes of what was read (call after :meth:`list`)."""
        if self.is_zip:
            st = self.path.stat()
            return [f"{self.part}\tzip\t{self.path.name}\t{st.st_size}\t{st.st_mtime_ns}"]
        return [f"{self.part}\tdir", *sorted(f"{self.part}/{line}" for line in self._stats)]

    def read(self, key: str) -> bytes:
        try:
            if self.is_zip:
                return self._open_zip().read(key)
            return Path(key).read_bytes()
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as err:
            where = f"{self.path}:{key}" if self.is_zip else key
            raise CorruptFileError(f"{where}: cannot be read ({err})") from err

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def _check_tree(tree: Tree, source: _Source) -> None:
    """Refuse anything but complete characters, so a partial copy never loads silently."""
    if not tree:
        raise CorruptFileError(
            f"{source.where}: no alphabets found (expected <Alphabet>/characterNN/*.png); {_how_to(source.path.parent)}"
        )
    for alphabet, chars in tree.items():
        if not any(chars.values()):
            raise CorruptFileError(
                f"{source.where}: alphabet folder {alphabet}/ holds no images (expected characterNN/*.png)"
            )
        for char, files in chars.items():
            if len(files) != DRAWINGS:
                raise CorruptFileError(
                    f"{source.where}: {alphabet}/{char}/ holds {len(files)} drawings, expected {DRAWINGS} "
                    f"(every Omniglot character has {DRAWINGS}); the data is incomplete"
                )


def find_sources(data_dir: Path) -> list[_Source]:
    """Locate both parts in ``data_dir`` (or ``data_dir/omniglot-py``). An archive wins
    over its extracted folder: its checksums catch a damaged copy, a half-extracted
    folder would not be noticed."""
    sources = []
    for part in PARTS:
        candidates = [base / name for name in (f"{part}.zip", part) for base in (data_dir, data_dir / "omniglot-py")]
        found = next((c for c in candidates if (c.is_file() if c.suffix == ".zip" else c.is_dir())), None)
        if found is None:
            raise FileNotFoundError(
                f"{data_dir}: found neither {part}.zip nor a {part}/ folder (also looked in "
                f"{data_dir / 'omniglot-py'}); {_how_to(data_dir)}"
            )
        sources.append(_Source(part, found))
    return sources


def _decode_png(data: bytes, name: str, pipeline: str = "released") -> np.ndarray:
    """One official PNG -> (28, 28) uint8: ``"released"`` nearest neighbour, strokes 0
    on 255; ``"smooth"`` Lanczos, strokes high on 0 (module docstring)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:  # Pillow is only needed for the first decode
        raise ImportError("reading Omniglot needs Pillow: pip install pillow") from err
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            if pipeline == "released":  # Pillow resizes 1-bit images by nearest neighbour, whatever it is asked
                small = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.NEAREST).convert("L")
            else:
                small = im.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptFileError(f"{name}: not a readable PNG ({err})") from err
    if size != (SOURCE_SIZE, SOURCE_SIZE):
        raise CorruptFileError(f"{name}: {size[0]}x{size[1]} image, expected {SOURCE_SIZE}x{SOURCE_SIZE} "
                               "(official Omniglot)")
    if pipeline == "released":
        return np.asarray(small, dtype=np.uint8)
    # The PNGs are black strokes on white; invert so the background is 0, as the
    # augmentation's zero padding assumes.
    return 255 - np.asarray(small, dtype=np.uint8)


@dataclass
class OmniglotData:
    """All of Omniglot, decoded. Images are in canonical order (part, alphabet, character,
    drawing), each character's ``DRAWINGS`` images consecutive and in file order.

    ``images`` (N, 28, 28) uint8; ``image_character`` (N,) int; ``character_alphabet`` (C,)
    int; ``alphabet_names``/``alphabet_parts`` (A,) str; ``character_names`` (C,) str.
    """

    images: np.ndarray
    image_character: np.ndarray
    character_alphabet: np.ndarray
    alphabet_names: list[str]
    alphabet_parts: list[str]
    character_names: list[str]

    def to_arrays(self, key: str) -> dict[str, np.ndarray]:
        return {
            "key": np.array(key), "images": self.images, "image_character": self.image_character,
            "character_alphabet": self.character_alphabet, "alphabet_names": np.array(self.alphabet_names),
            "alphabet_parts": np.array(self.alphabet_parts), "character_names": np.array(self.character_names),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> OmniglotData:
        data = cls(
            images=arrays["images"], image_character=arrays["image_character"],
            character_alphabet=arrays["character_alphabet"],
            alphabet_names=[str(s) for s in arrays["alphabet_names"]],
            alphabet_parts=[str(s) for s in arrays["alphabet_parts"]],
            character_names=[str(s) for s in arrays["character_names"]],
        )
        data.check()
        return data

    def check(self) -> None:
        """Shapes agree and each character's DRAWINGS images are consecutive (ValueError if not)."""
        c, a = len(self.character_names), len(self.alphabet_names)
        if (self.images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or self.images.dtype != np.uint8
                or not np.array_equal(self.image_character, np.repeat(np.arange(c), DRAWINGS))
                or self.character_alphabet.shape != (c,) or len(self.alphabet_parts) != a
                or (c and (self.character_alphabet.min() < 0 or self.character_alphabet.max() >= a))):
            raise ValueError("inconsistent Omniglot arrays")


def decode_sources(sources: list[_Source], trees: list[Tree], pipeline: str = "released") -> OmniglotData:
    """Decode every listed PNG (the slow path: about 8 s for the full data on one core)."""
    images: list[np.ndarray] = []
    image_character: list[int] = []
    character_alphabet: list[int] = []
    alphabet_names: list[str] = []
    alphabet_parts: list[str] = []
    character_names: list[str] = []
    for source, tree in zip(sources, trees):
        for alphabet in sorted(tree, key=_natural_key):
            a = len(alphabet_names)
            alphabet_names.append(alphabet)
            alphabet_parts.append(source.part)
            for char in sorted(tree[alphabet], key=_natural_key):
                c = len(character_names)
                character_names.append(f"{source.part}/{alphabet}/{char}")
                character_alphabet.append(a)
                for _name, key in sorted(tree[alphabet][char], key=lambda item: _natural_key(item[0])):
                    label = f"{source.path}:{key}" if source.is_zip else key
                    images.append(_decode_png(source.read(key), label, pipeline))
                    image_character.append(c)
    data = OmniglotData(
        images=np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
        image_character=np.asarray(image_character, dtype=np.int32),
        character_alphabet=np.asarray(character_alphabet, dtype=np.int32),
        alphabet_names=alphabet_names, alphabet_parts=alphabet_parts, character_names=character_names,
    )
    data.check()
    return data


def load_omniglot(data_dir: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None, pipeline: str = "released") -> OmniglotData:
    """Omniglot from ``data_dir`` (see :func:`resolve_data_dir`), decoded by ``pipeline``,
    via the decode cache.

    The cache file is ``omniglot-<pipeline>-<dir>-<key>.npz`` in ``cache_dir`` (default:
    :func:`default_cache_dir`), where ``<key>`` hashes the sources' names, sizes and
    mtimes; a changed source changes the key, and stale files of the same directory
    are removed when a new one is written. An unreadable cache is rebuilt.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    root = resolve_data_dir(data_dir)
    sources = find_sources(root)
    try:
        trees = [s.list() for s in sources]
        lines = [CACHE_FORMAT[pipeline]] + [line for s in sources for line in s.fingerprint()]
        key = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        dir_tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
        stem = f"omniglot-{pipeline}-{dir_tag}"  # one cache per (pipeline, directory)
        path = cache / f"{stem}-{key[:24]}.npz"
        data = read_cache(path, key, OmniglotData.from_arrays, "Omniglot")
        if data is None:
            data = decode_sources(sources, trees, pipeline)
            write_cache(path, data.to_arrays(key), f"{stem}-*.npz", "Omniglot")
    finally:
        for s in sources:
            s.close()
    return data


# ---------------------------------------------------------------------- the benchmark
class OmniglotBenchmark:
    """20-way alphabet tasks on Omniglot (see the module docstring for the protocol).

    ``seed`` fixes the assignment of alphabets to splits; ``num_pretrain`` and
    ``num_test`` are the sizes of the pretraining pool and the test split (paper: 25
    and 10), validation gets the remaining kept alphabets and must not be empty.
    ``pipeline`` and ``bn_eval`` are described in the module docstring.
    """

    name = "omniglot"
    num_classes = NUM_CLASSES
    image_size = IMAGE_SIZE
    train_per_class = DRAWINGS - TEST_DRAWINGS
    test_per_class = TEST_DRAWINGS

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        num_pretrain: int = 25,
        num_test: int = 10,
        pipeline: str = "released",
        bn_eval: str = "running",
    ) -> None:
        positive_int("num_pretrain", num_pretrain)
        positive_int("num_test", num_test)
        if bn_eval not in BN_EVAL:
            raise ValueError(f"bn_eval must be one of {BN_EVAL}, got {bn_eval!r}")
        self.device = torch.device(device)
        self.seed = seed
        self.pipeline = pipeline
        self.bn_eval = bn_eval
        data = load_omniglot(data_dir, cache_dir, pipeline)
        _warn_if_not_official(data)

        # All images on the device as uint8 (4x smaller than float); scaled at use.
        self.images = torch.from_numpy(data.images).unsqueeze(1).to(self.device)  # (N, 1, 28, 28)
        self.image_character = torch.from_numpy(data.image_character.astype(np.int64))  # (N,)
        self.character_alphabet = torch.from_numpy(data.character_alphabet.astype(np.int64))  # (C,)
        self.image_alphabet = self.character_alphabet[self.image_character]  # (N,)
        self.alphabet_names = data.alphabet_names
        self.alphabet_parts = data.alphabet_parts
        self.character_names = data.character_names
        # (C, 20) image indices of each character, drawings in file order: images are
        # stored character by character (OmniglotData.check), so this is a reshape.
        self.character_images = torch.arange(len(data.images)).view(-1, DRAWINGS)
        self._alphabet_characters = [
            torch.nonzero(self.character_alphabet == a).flatten() for a in range(len(self.alphabet_names))
        ]

        self.kept_alphabets = [a for a, chars in enumerate(self._alphabet_characters) if len(chars) >= NUM_CLASSES]
        needed = num_pretrain + num_test + 1
        if len(self.kept_alphabets) < needed:
            raise ValueError(
                f"Omniglot data has {len(self.kept_alphabets)} alphabets with >= {NUM_CLASSES} characters; "
                f"num_pretrain={num_pretrain} + num_test={num_test} + at least 1 for validation needs {needed}"
            )
        order = torch.randperm(len(self.kept_alphabets), generator=torch.Generator().manual_seed(seed)).tolist()
        shuffled = [self.kept_alphabets[i] for i in order]
        self.splits: dict[str, list[int]] = {
            "train": shuffled[:num_pretrain],
            "test": shuffled[num_pretrain : num_pretrain + num_test],
            "val": shuffled[num_pretrain + num_test :],
        }

    # Sizes of the whole dataset as read (before dropping small alphabets).
    @property
    def num_alphabets(self) -> int:
        return len(self.alphabet_names)

    @property
    def num_characters(self) -> int:
        return len(self.character_names)

    @property
    def num_images(self) -> int:
        return len(self.images)

    def make_model(self) -> nn.Module:
        return ConvNet(in_channels=1, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                       running_stats=self.bn_eval == "running",
                       bn_weight_init="uniform" if self.pipeline == "released" else "ones").to(self.device)

    def num_sources(self, split: str) -> int:
        return len(self._split(split))

    def split_alphabets(self, split: str) -> list[str]:
        """Names of the alphabets of ``split``, in source order."""
        return [self.alphabet_names[a] for a in self._split(split)]

    def task(self, split: str, source: int, generator: torch.Generator, task_seed: int = 0) -> Task:
        """The 20-way task of alphabet ``source`` of ``split``, for one visit.

        Its characters and labels depend on ``task_seed`` alone (a run passes its seed),
        so they are the same at every visit;
        ``generator`` (this visit's) augments the test set and, through
        ``Task.augment``, the training minibatches. ``train_x`` (300, 1, 28, 28) float in
        [0, 1], unaugmented; ``test_x`` (100, 1, 28, 28), augmented here. Labels are
        class-major: 15 (train) or 5 (test) consecutive images per class. ``meta``
        records the split, the characters and the image indices used.
        """
        alphabets = self._split(split)
        if not 0 <= source < len(alphabets):
            raise ValueError(f"source must be in [0, {len(alphabets)}) for split {split!r}, got {source}")
        alphabet = alphabets[source]
        chars = self._alphabet_characters[alphabet]
        identity = derived_generator(task_seed, "omniglot-task", split, alphabet)
        pick = torch.randperm(len(chars), generator=identity)[:NUM_CLASSES]
        chosen = chars[pick]  # (20,) character indices; label = position
        drawings = self.character_images[chosen]  # (20, 20) image indices, file order
        train_index = drawings[:, : self.train_per_class].reshape(-1)
        test_index = drawings[:, self.train_per_class :].reshape(-1)
        labels = torch.arange(NUM_CLASSES)
        train_y = labels.repeat_interleave(self.train_per_class).to(self.device)
        test_y = labels.repeat_interleave(self.test_per_class).to(self.device)
        augment = AUGMENTATION[self.pipeline]
        test_x = augment(self.pixels(test_index), generator)
        return Task(
            name=self.alphabet_names[alphabet], train_x=self.pixels(train_index), train_y=train_y,
            test_x=test_x, test_y=test_y, num_classes=NUM_CLASSES, augment=augment, source=source,
            meta={"split": split, "characters": [self.character_names[c] for c in chosen.tolist()],
                  "train_index": train_index, "test_index": test_index},
        )

    def pixels(self, index: Tensor) -> Tensor:
        """Images ``index`` (K,) as float (K, 1, 28, 28) in [0, 1] on the device."""
        return self.images[index.to(self.device)].float().div_(255)

    def _split(self, split: str) -> list[int]:
        if split not in self.splits:
            raise ValueError(f"split must be one of {sorted(self.splits)}, got {split!r}")
        return self.splits[split]


def _warn_if_not_official(data: OmniglotData) -> None:
    for part, expected in OFFICIAL_COUNTS.items():
        alphabets = [a for a, p in enumerate(data.alphabet_parts) if p == part]
        chars = int(np.isin(data.character_alphabet, alphabets).sum())
        found = (len(alphabets), chars, chars * DRAWINGS)
        if found != expected:
            warnings.warn(
                f"{part} holds {found[0]} alphabets, {found[1]} characters, {found[2]} images; the official "
                f"release has {expected[0]}, {expected[1]}, {expected[2]}: results will not be comparable",
                OmniglotSizeWarning, stacklevel=3,
            )


__all__ = [
    "AUGMENTATION", "BN_EVAL", "PIPELINES", "AffineParams", "OmniglotBenchmark", "OmniglotData",
    "OmniglotSizeWarning", "RandomAffine", "affine_params_from_uniforms",
    "affine_theta", "apply_affine", "draw_affine_uniforms", "load_omniglot", "random_affine", "resolve_data_dir",
    "sample_affine_params",
]


# ---------------------------------------------------------------------- download
OFFICIAL_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}"
ARCHIVES = ("images_background.zip", "images_evaluation.zip")


def download_omniglot(data_dir: str | os.PathLike, timeout: float = 60.0) -> list[Path]:
    """Fetch the official archives into ``data_dir`` (those already there are kept).

    Each archive is written atomically and checked to be a readable zip before it is
    kept. Offline, the error says which files to put where instead.
    """
    import urllib.request

    directory = Path(data_dir).expanduser()
    written = []
    for name in ARCHIVES:
        target = directory / name
        if target.is_file():
            continue
        url = OFFICIAL_URL.format(name=name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except OSError as err:
            raise FileNotFoundError(
                f"could not download {url} ({err}); without a network, {_how_to(directory)}"
            ) from err
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                bad = archive.testzip()
        except zipfile.BadZipFile as err:
            raise CorruptFileError(f"{url}: the download is not a zip archive ({err})") from err
        if bad is not None:
            raise CorruptFileError(f"{url}: the downloaded archive is damaged at {bad}")
        atomic_write_bytes(target, payload)
        written.append(target)
    return written
