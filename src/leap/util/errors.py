"""The error policy: what a failure is, and how the command line reports it.

- [`UsageError`][leap.util.errors.UsageError]: bad input (an option, a path, a file's contents); one line, exit 2.
- [`CorruptFileError`][leap.util.errors.CorruptFileError]: a file exists but cannot be read as what it should be (a
  ``ValueError``, so library callers can catch it as bad input).
- [`RunStopped`][leap.util.errors.RunStopped]: meta-training stopped early on purpose (a signal, repeated
  failures) after writing a checkpoint; one line, its own exit status.
- The environment ([`environment_error()`][leap.util.errors.environment_error]): a full disk, a read-only file system,
  missing permissions, memory; one line, exit 1.

Set ``LEAP_DEBUG=1`` to see the traceback of any of them instead.

``leap.cli.main`` turns each into its exit status; nothing below the CLI prints tracebacks
or exits.
"""

from __future__ import annotations

import errno
import os


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class CorruptFileError(ValueError):
    """A file exists but cannot be read as what it should be."""


class RunStopped(Exception):
    """Meta-training stopped early (signal or repeated failures); a checkpoint was written."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def debugging() -> bool:
    """``LEAP_DEBUG=1``: errors propagate with their traceback instead of one line."""
    return os.environ.get("LEAP_DEBUG", "") not in ("", "0")


_ENVIRONMENT_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
                       errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                       errno.EDQUOT: "disk quota exceeded", errno.ENOMEM: "out of memory",
                       errno.EMFILE: "too many open files"}


#: OS errors that mean a path the user gave is wrong (exit 2), not that the machine failed.
_PATH_ERRNOS = {errno.ENOENT: "no such file or directory", errno.ENOTDIR: "not a directory",
                errno.EISDIR: "is a directory", errno.ENAMETOOLONG: "file name too long",
                errno.ELOOP: "too many levels of symbolic links"}


def environment_error(err: BaseException) -> tuple[int, str] | None:
    """(exit status, one line) for a failure of the machine (exit 1: disk, permissions,
    memory) or of a path the user gave (exit 2), or None when ``err`` is neither (a bug:
    its traceback is shown)."""
    # torch.cuda.OutOfMemoryError; torch's CPU allocator raises a RuntimeError saying so
    torch_oom = isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or torch_oom:
        detail = str(err).splitlines()[0][-160:] if str(err) else ""
        return 1, "out of memory" + (f" ({detail})" if detail else "") + "; use smaller batches or another device"
    if isinstance(err, OSError) and err.errno is not None:
        code = 2 if err.errno in _PATH_ERRNOS else 1
        what = {**_ENVIRONMENT_ERRNOS, **_PATH_ERRNOS}.get(err.errno, err.strerror or f"errno {err.errno}")
        where = err.filename if err.filename is not None else ""
        return code, f"{where}: {what}" if where else what
    return None
