"""The examples run as a user runs them (python examples/X.py --quick) and print results."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=EXAMPLES.parent)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_sinusoid_prints_each_inits_error_and_meta_learned_inits_beat_a_random_one():
    out = run_example(str(EXAMPLES / "sinusoid.py"), "--quick")
    mse = {m.group(1).strip(): float(m.group(2)) for m in re.finditer(r"^(.+?) +query MSE .*: ([\d.]+)$", out, re.M)}
    assert set(mse) == {"Leap", "Reptile", "random init"}, out
    assert mse["Leap"] < mse["random init"] and mse["Reptile"] < mse["random init"]


@pytest.mark.parametrize("learner", ["leap", "reptile", "fomaml", "maml", "none"])
def test_the_custom_loop_runs_with_every_learner_and_quick_shows_what_meta_learning_gained(learner):
    out = run_example(str(EXAMPLES / "custom_loop.py"), "--quick", "--learner", learner)
    found = re.search(rf"^{learner}: held-out test error after 10 Adam steps: ([\d.]+)% \(random init: ([\d.]+)%\)$",
                      out, re.M)
    assert found, out
    learned, random_init = float(found.group(1)), float(found.group(2))
    if learner == "none":
        assert learned == random_init
    else:  # measured with --quick: 35-50% against the random init's 62% (chance 80%)
        assert learned < random_init - 5, out


def test_the_transformer_loop_meta_learns_an_init_that_trains_held_out_packages_faster():
    out = run_example(str(EXAMPLES / "transformer_loop.py"), "--quick")
    found = re.search(r"^leap: held-out mean training loss over 30 steps ([\d.]+) \(random init: ([\d.]+)\), "
                      r"final test loss ([\d.]+) \(random init: ([\d.]+)\)$", out, re.M)
    assert found, out
    auc, random_auc, final, random_final = map(float, found.groups())
    # measured with --quick: 2.92 against 4.22, and 2.78 against 3.22
    assert auc < random_auc - 0.5 and final < random_final, out
