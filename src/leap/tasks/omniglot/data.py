"""Reading and decoding the official archives (or their folders), cached as one array per pipeline."""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leap.tasks.cache import default_cache_dir, read_cache, write_cache
from leap.tasks.containers import Container
from leap.tasks.omniglot.constants import (
    CACHE_FORMAT,
    DRAWINGS,
    ENV_VAR,
    IMAGE_SIZE,
    PARTS,
    PIPELINES,
    SOURCE_SIZE,
    _how_to,
)
from leap.util.errors import CorruptFileError


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


# Listing of one part: alphabet -> character -> [(file name, member key)].
Tree = dict[str, dict[str, list[tuple[str, str]]]]


class _Source:
    """One part (images_background or images_evaluation): a zip holding ``<part>/`` or
    the extracted folder, read through [`leap.tasks.containers.Container`][leap.tasks.containers.Container]."""

    def __init__(self, part: str, path: Path) -> None:
        self.part = part
        self.path = path
        self.container = Container(path)
        self.is_zip = self.container.kind == "zip"
        self.prefix = f"{part}/" if self.is_zip else ""  # where the part's alphabets are

    @property
    def where(self) -> str:
        """How errors name this source."""
        return f"{self.path} ({self.part}/ inside the archive)" if self.is_zip else str(self.path)

    def list(self) -> Tree:
        """alphabet -> character -> drawings. Folders count even when empty (listed, or
        implied by a deeper path), so `_check_tree()` can report them."""
        tree: Tree = {}
        for name in self.container.names(dirs=True):
            inside = name[len(self.prefix):].rstrip("/")
            if not name.startswith(self.prefix) or not inside:  # another part, or the part's own folder
                continue
            parts = inside.split("/")
            is_dir = name.endswith("/")
            folders = parts if is_dir else parts[:-1]
            if folders:
                chars = tree.setdefault(folders[0], {})
                if len(folders) >= 2:
                    files = chars.setdefault(folders[1], [])
                    if not is_dir and len(parts) == 3 and parts[2].lower().endswith(".png"):
                        files.append((parts[2], name))
        _check_tree(tree, self)
        return tree

    def fingerprint(self) -> list[str]:
        """Names, sizes and mtimes of what was read (call after `list()`)."""
        return [self.part, *self.container.fingerprint()]

    def read(self, key: str) -> bytes:
        return self.container.read(key)

    def label(self, key: str) -> str:
        return self.container.where(key)

    def close(self) -> None:
        self.container.close()


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
                    images.append(_decode_png(source.read(key), source.label(key), pipeline))
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
    """Omniglot from ``data_dir`` (see [`resolve_data_dir()`][leap.tasks.omniglot.data.resolve_data_dir]), decoded
    by ``pipeline``,
    via the decode cache.

    The cache file is ``omniglot-<pipeline>-<dir>-<key>.npz`` in ``cache_dir`` (default:
    `default_cache_dir()`), where ``<key>`` hashes the sources' names, sizes and
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
