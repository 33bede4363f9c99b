"""The ``leap`` command's entry point: ``leap --version`` answers without importing torch
or the experiments; everything else goes to `leap.cli.main()`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--version"]:
        from leap.util.version import VERSION

        print(f"leap {VERSION}")
        return 0
    from leap.cli import main as cli_main

    return cli_main(args)
