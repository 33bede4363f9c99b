"""Fetching the official archives into a data directory (leap train --download)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from leap.tasks.omniglot.constants import _how_to
from leap.util.errors import CorruptFileError
from leap.util.files import atomic_write_bytes

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
