"""Which protocol detail moves Omniglot's no-pretraining error, measured.

No pretraining needs no meta-training, so its test error on the 10 held-out alphabets
checks the evaluation protocol alone (paper, Table 2: 82.6% at 20 pretraining
alphabets). This evaluates a random initialization under each combination below,
switching one detail at a time from the project's former protocol to the authors' code:

- images: ``smooth`` (Lanczos, inverted, bilinear augmentation) or ``released``
  (nearest neighbour, not inverted, nearest augmentation, fill 0);
- batch norm at test time: ``batch`` (test-batch statistics, transductive) or ``running``
  (the task's training statistics, eval mode);
- batch-norm scales at initialization: ``ones`` or ``uniform`` (U(0, 1), PyTorch 0.4).

Usage (one thread; about 40 s per evaluation on one core):

    OMP_NUM_THREADS=1 python benchmarks/omniglot_protocol.py --data-dir ../shared/data/omniglot --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from leap.engine import InnerLoop
from leap.engine.evaluation import evaluate
from leap.models import ConvNet
from leap.tasks.omniglot import OmniglotBenchmark

# (images, bn_eval, bn scales): from the former protocol to the released one, one step at a time.
CONFIGS = [
    ("smooth", "batch", "ones"),
    ("smooth", "running", "ones"),
    ("released", "running", "ones"),
    ("released", "running", "uniform"),
    ("released", "batch", "uniform"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    loop = InnerLoop(args.steps, 20, 0.1)
    rows = []
    for images, bn_eval, scales in CONFIGS:
        bench = OmniglotBenchmark(args.data_dir, pipeline=images, bn_eval=bn_eval)
        errors = []
        start = time.perf_counter()
        for seed in seeds:
            torch.manual_seed(seed)  # a run's model is built from its seed, as MetaTrainer does
            model = ConvNet(1, 20, 28, running_stats=bn_eval == "running", bn_weight_init=scales)
            result = evaluate(bench, model.state_dict(), loop, seed, "test", engine="sequential")
            errors.append(100 * result.test_error)
        mean = sum(errors) / len(errors)
        rows.append({"images": images, "bn_eval": bn_eval, "bn_scales": scales, "test_errors": errors,
                     "mean": mean, "seconds": time.perf_counter() - start})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| images | test-time batch norm | batch-norm scales | test error (%) per seed | mean |")
    print("|---|---|---|---|---|")
    for r in rows:
        per_seed = ", ".join(f"{e:.1f}" for e in r["test_errors"])
        print(f"| {r['images']} | {r['bn_eval']} | {r['bn_scales']} | {per_seed} | {r['mean']:.1f} |")


if __name__ == "__main__":
    main()
