"""The README's meta-optimizer rule holds on a problem of a user's own: following it, Leap
learns and is at least level with Reptile (issue 30: the former advice, SGD at 0.1/K,
made Leap the worst meta-learner on exactly such a problem).

The problem is tools/meta_lr_study.py's ``circle`` (is a point inside a random circle?
MLP 2-64-64-2, 10 SGD steps per task), at 50 meta-steps instead of the study's 300, one
seed; the study's table in docs/benchmarks.md holds the full measurement."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_study():
    spec = importlib.util.spec_from_file_location("meta_lr_study", ROOT / "tools" / "meta_lr_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def readme_meta_optimizer() -> tuple[str, float]:
    """The meta-optimizer of the README's loop: ``torch.optim.NAME(learner.parameters(), lr=X)``."""
    pattern = r"torch\.optim\.(\w+)\(learner\.parameters\(\), lr=([\d.e-]+)\)"
    found = re.findall(pattern, (ROOT / "README.md").read_text())
    assert found, "the README's loop names no meta-optimizer"
    assert len(set(found)) == 1, f"the README's snippets disagree on the meta-optimizer: {sorted(set(found))}"
    name, lr = found[0]
    return name.lower(), float(lr)


def test_the_readme_meta_optimizer_puts_leap_level_with_reptile_on_a_users_own_problem():
    study = load_study()
    optimizer, lr = readme_meta_optimizer()
    assert optimizer in ("sgd", "adam")
    problem = study.PROBLEMS["circle"]
    accuracy = {name: study.held_out(problem, study.meta_train(problem, name, optimizer, lr, seed=0, meta_steps=50,
                                                                meta_batch=5, steps=10), tasks=50, steps=10)
                for name in ("leap", "reptile")}
    torch.manual_seed(0)
    random_init = study.held_out(problem, problem.model(), tasks=50, steps=10)
    assert accuracy["leap"] > random_init + 0.1 and accuracy["reptile"] > random_init + 0.1, (accuracy, random_init)
    assert accuracy["leap"] >= accuracy["reptile"] - 0.01, (accuracy, random_init)
