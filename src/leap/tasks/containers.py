"""Files of a dataset: a folder, a zip or a tar archive, read alike ([`Container`][leap.tasks.containers.Container]).

The one reader of dataset files for every task family (Omniglot's two parts, Multi-CV's
datasets): listing without hidden entries, reading with one error for anything damaged,
and a fingerprint of what was read for the decode caches.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
import zlib
from pathlib import Path

from leap.util.errors import CorruptFileError


# ---------------------------------------------------------------------- files: folder, zip or tar
class Container:
    """A folder, ``.zip`` or ``.tar[.gz]`` seen as relative POSIX paths of files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._tar: dict[str, bytes] | None = None
        self._names: list[str] | None = None
        self._dirs: list[str] = []
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

    def names(self, dirs: bool = False) -> list[str]:
        """Every file in the container (sorted), hidden entries and ``__MACOSX`` excluded;
        with ``dirs`` also its folders, as ``"a/b/"`` (a zip lists those it records), so
        that a caller can report an empty one."""
        if self._names is None:
            kind = self.kind
            if kind == "dir":
                names = []
                for root, subdirs, files in os.walk(self.path):
                    subdirs[:] = sorted(d for d in subdirs if not hidden(d))
                    self._dirs.extend((Path(root) / d).relative_to(self.path).as_posix() + "/" for d in subdirs)
                    for f in files:
                        if hidden(f):
                            continue
                        full = Path(root) / f
                        rel = full.relative_to(self.path).as_posix()
                        st = full.stat()
                        names.append(rel)
                        self._stats.append(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}")
            elif kind == "zip":
                visible = [n for n in self._open_zip().namelist() if not any(hidden(p) for p in n.split("/"))]
                names = [n for n in visible if not n.endswith("/")]
                self._dirs = [n for n in visible if n.endswith("/")]
            elif kind == "tar":
                names = sorted(n for n in self._read_tar() if not any(hidden(p) for p in n.split("/")))
            else:
                names = []
            self._names = sorted(names)
        return sorted([*self._names, *self._dirs]) if dirs else self._names

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


def hidden(name: str) -> bool:
    """Entries every listing skips: dot files and macOS's ``__MACOSX`` folders."""
    return name.startswith(".") or name == "__MACOSX"
