"""``leap --help``, each command's ``--help`` and a usage error answer without importing
torch, numpy or safetensors (seconds of imports): the parser is built from torch-free
declarations and each command imports what it runs only when it runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "safetensors")

#: Runs ``leap.cli.main(argv)`` in a fresh interpreter and prints, last, the exit code and
#: which of the heavy modules (argv[2:]) were imported.
PROBE = """
import json, sys
from leap.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as done:
    code = done.code
print(json.dumps({"code": code, "imported": [m for m in sys.argv[2:] if m in sys.modules]}))
"""

COMMANDS = ("train", "evaluate", "sweep", "report", "compare", "rl-eval", "ablation", "jacobian")


def probe(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), *HEAVY], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [
    ["--help"],
    *([command, "--help"] for command in COMMANDS),
    ["train", "--benchmark", "omniglot", "--help"],
    ["train", "--benchmark", "multicv", "--help"],
    ["train", "--benchmark", "minatar", "--help"],
    ["sweep", "--benchmark", "omniglot", "--help"],
], ids=" ".join)
def test_help_imports_neither_torch_nor_numpy_nor_safetensors(argv):
    assert probe(argv) == {"code": 0, "imported": []}


@pytest.mark.parametrize("argv", [
    ["train", "--method", "lep", "--out", "x"],  # a near miss among the choices
    ["train", "--out", "x", "--meta-steps", "zero"],
    ["frobnicate"],
], ids=" ".join)
def test_a_usage_error_imports_neither_torch_nor_numpy_nor_safetensors(argv):
    assert probe(argv) == {"code": 2, "imported": []}
