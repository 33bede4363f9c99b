"""Appendix B at step 1 on the paper's 64-filter ConvNet, for a chosen image pipeline and
batch-norm initialization (docs/analysis.md, "Where we differ").

At step 1, J_1 = I - α H_0 on the first layer's block, so one exact Hessian block per task
(``sgd_block_jacobians`` at α = 1 gives D = -H_LL) yields ρ_1 for every learning rate.
Tasks, initial convolutions and first minibatches are those of ``leap jacobian``
(``study_model``, ``study_batches``; seed 0, the first alphabets of the pretraining pool,
batch 20); only the images' pipeline (``--pipeline``) and the batch-norm scales' initial
values (``--bn-init``: ``ones``, today's PyTorch default, or ``uniform``, U(0, 1) as in
PyTorch 0.4 and the default Omniglot protocol) are chosen here. The first convolution is
built before any batch norm, so its initial weights are the same for both ``--bn-init``.

Writes one JSON record (resumable: tasks already in ``--out`` are kept) and prints, with
``--table FILE...``, a Markdown table of mean ± std over tasks (min - max) per file.

    OMP_NUM_THREADS=1 python tools/jacobian_step1.py --data-dir ../shared/data/omniglot \
        --pipeline released --bn-init uniform --out results/analysis/jacobian-step1/released-uniform.json
    python tools/jacobian_step1.py --table results/analysis/jacobian-step1/*.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

LRS = (0.01, 0.1, 0.5)


def measure(args: argparse.Namespace) -> None:
    import torch

    from leap.experiments.analysis.jacobian import (
        JacobianProtocol,
        first_layer,
        relative_precision,
        sgd_block_jacobians,
        study_batches,
    )
    from leap.models import ConvNet
    from leap.tasks import make_benchmark
    from leap.util.files import atomic_write_json
    from leap.util.seeding import derive_seed

    protocol = JacobianProtocol(steps=1, filters=64)
    settings = {"pipeline": args.pipeline, "bn_init": args.bn_init, "steps": 1, "filters": 64, "seed": protocol.seed,
                "batch": protocol.batch, "split": protocol.split, "lrs": list(LRS)}
    out = Path(args.out)
    record = {"settings": settings, "tasks": []}
    if out.is_file():
        previous = json.loads(out.read_text())
        if previous.get("settings") != settings:
            raise SystemExit(f"{out} holds another measurement ({previous.get('settings')}); use another --out")
        record = previous
    benchmark = make_benchmark("omniglot", data_dir=args.data_dir, device="cpu", pipeline=args.pipeline)
    for t in range(len(record["tasks"]), args.tasks):
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # as study_model, with the chosen batch-norm init
            torch.manual_seed(derive_seed(protocol.seed, "jacobian-init", t))
            model = ConvNet(in_channels=1, num_classes=20, image_size=28, filters=64,
                            bn_weight_init=args.bn_init).train()
        task, batches = study_batches(benchmark, protocol, t, "cpu")
        params = {n: p.detach() for n, p in model.named_parameters()}
        (d,) = sgd_block_jacobians(model, params, batches, 1.0, first_layer(model), chunk=args.chunk)  # -H_LL
        rho = {str(lr): relative_precision(lr * d) for lr in LRS}
        record["tasks"].append({"task": task.name, "rho": rho, "seconds": time.perf_counter() - start})
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, record)
        print(f"task {t} ({task.name}): " + ", ".join(f"lr {lr}: {v:.3g}" for lr, v in rho.items())
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)


def table(paths: list[str]) -> str:
    lines = ["| pipeline | batch-norm scales | tasks | " + " | ".join(f"ρ_1, lr {lr}" for lr in LRS) + " |",
             "|---" * (3 + len(LRS)) + "|"]
    for path in paths:
        record = json.loads(Path(path).read_text())
        s = record["settings"]
        cells = []
        for lr in LRS:
            values = [t["rho"][str(lr)] for t in record["tasks"]]
            std = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells.append(f"{statistics.mean(values):.2e} ± {std:.1e} ({min(values):.1e} - {max(values):.1e})")
        bn = {"ones": "1", "uniform": "U(0, 1)"}[s["bn_init"]]
        lines.append(f"| {s['pipeline']} | {bn} | {len(record['tasks'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data/omniglot")
    parser.add_argument("--pipeline", default="released", choices=["released", "smooth"])
    parser.add_argument("--bn-init", default="uniform", choices=["uniform", "ones"])
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=128, help="Hessian-vector products at once (memory)")
    parser.add_argument("--out", help="the JSON record to write")
    parser.add_argument("--table", nargs="+", metavar="FILE", help="print the table of these records")
    args = parser.parse_args()
    if args.table:
        print(table(args.table), end="")
        return
    if not args.out:
        parser.error("--out FILE (or --table FILE...)")
    measure(args)


if __name__ == "__main__":
    main()
