"""The error policy: what a failure is, and how the command line reports it.

- :class:`UsageError`: bad input (an option, a path, a file's contents); one line, exit 2.
- :class:`CorruptFileError`: a file exists but cannot be read as what it should be (a
  ``ValueError``, so library callers can catch it as bad input).
- :class:`RunStopped`: meta-training stopped early on purpose (a signal, repeated
  failures) after writing a checkpoint; one line, its own exit status.

``leap.cli.main`` turns each into its exit status; nothing below the CLI prints tracebacks
or exits.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class CorruptFileError(ValueError):
    """A file exists but cannot be read as what it should be."""


class RunStopped(Exception):
    """Meta-training stopped early (signal or repeated failures); a checkpoint was written."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
