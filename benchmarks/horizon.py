"""Peak memory and time of one meta-step against the length of the task's training (not a
test: a measurement).

For a small transformer (``leap.models.CharTransformer``: 2 layers, width 128, 128 bytes,
batch 8, AdamW with clipping) and the Omniglot ConvNet (64 filters, 28x28, batch 20, SGD
0.1), one task is trained for K steps and the meta-learner does its part: Leap, Reptile and
FOMAML watch the ordinary loop through the hook (``leap.engine.inner.train_task``), MAML
differentiates through its K steps (``maml_task``: SGD steps on a dict of tensors, then the
query loss back to θ0), and "plain" is the same training with no meta-learner, the cost
every method pays anyway. Each (model, method, K) runs in a fresh process, which reports
the peak of its resident memory during the meta-step (``VmHWM``, reset before it) above what
it held after building the model, the data and one warm-up step, and the wall time of the
meta-step; each point runs twice, for its time with the default allocator and for its memory
with glibc returning freed memory at once (``TRIMMING``: otherwise the peak measures what the
allocator kept, which varied from 39 to 316 MiB between identical runs). MAML is not run
where a straight line through its two largest measured points predicts more than
``--maml-cap-gib``: the table then says so, with the prediction.

    OMP_NUM_THREADS=1 python benchmarks/horizon.py --out horizon.json [--ks 10,100,1000,5000]
    OMP_NUM_THREADS=1 python benchmarks/horizon.py --quick       # K = 2, 4: seconds (the tests run this)

Writes the JSON, a Markdown table beside it (``.md``) and, with matplotlib, a figure
(``.png``) of memory and time against K. Run it on a quiet machine: the times are wall
times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("plain", "leap", "reptile", "fomaml", "maml")
MODELS = ("transformer", "convnet")


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: now; VmHWM: the peak
    since the last reset), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Start VmHWM again from the current resident memory (Linux: clear_refs 5), so that the
    peak read afterwards is the measured step's, not the setup's."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(model_name: str, method: str, k: int) -> dict:
    """One meta-step of one task of K steps, in this process (call in a fresh one)."""
    import torch

    import leap
    from leap.engine.inner import InnerLoop, maml_task, train_task
    from leap.models import CharTransformer, ConvNet
    from leap.tasks.base import Task

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    if model_name == "transformer":
        model = CharTransformer(width=128, layers=2, heads=4, context=128)
        x = torch.randint(0, 256, (256, 129), generator=g)
        task = Task("text", x[:, :-1], x[:, 1:], x[:8, :-1], x[:8, 1:], 256)
        loop = InnerLoop(k, 8, 1e-3, "adamw", max_grad_norm=1.0)
    else:
        model = ConvNet(in_channels=1, num_classes=20, image_size=28)
        images, labels = torch.rand(400, 1, 28, 28, generator=g), torch.randint(0, 20, (400,), generator=g)
        task = Task("images", images, labels, images[:100], labels[:100], 20)
        loop = InnerLoop(k, 20, 0.1, "sgd")
    learner = {"plain": None, "leap": lambda: leap.Leap(model), "reptile": lambda: leap.Reptile(model),
               "fomaml": lambda: leap.FOMAML(model), "maml": lambda: leap.MAML(model, inner_lr=0.1)}[method]
    learner = learner() if learner is not None else None
    train_task(model, task, InnerLoop(1, loop.batch_size, loop.lr, loop.optimizer), g)  # warm-up
    before = status_kib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    if isinstance(learner, leap.MAML):
        maml_task(model, task, loop, g, learner)
    else:
        if learner is not None:
            learner.init_task()
            learner.to(model)
        train_task(model, task, loop, g, learner)
    if learner is not None:
        learner.normalize()
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM")
    return {"model": model_name, "method": method, "k": k, "seconds": seconds,
            "peak_mib": max(0, peak - before) / 1024, "threads": torch.get_num_threads()}


#: glibc returns freed memory to the system at once: the peak then counts what the step
#: holds, not what the allocator kept after freeing it. Measured on the ConvNet, plain
#: training, K = 1,000, three identical runs: 39, 117 and 316 MiB with the default
#: allocator, 39.5-39.7 MiB with this setting (at 1.9 times the time: so times come from
#: a run with the default allocator).
TRIMMING = {"MALLOC_TRIM_THRESHOLD_": "0"}


def run_child(model_name: str, method: str, k: int, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", model_name, method, str(k)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        return {"model": model_name, "method": method, "k": k, "error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_point(model_name: str, method: str, k: int) -> dict:
    """One point in two fresh processes: the time with the default allocator, the peak
    memory with a trimming one (`TRIMMING`); the default allocator's peak is kept beside it."""
    timed = run_child(model_name, method, k)
    if "error" in timed:
        return timed
    memory = run_child(model_name, method, k, TRIMMING)
    if "error" in memory:
        return memory
    return {**timed, "peak_mib": memory["peak_mib"], "peak_mib_default_allocator": timed["peak_mib"],
            "seconds_trimming": memory["seconds"]}


def maml_prediction(rows: list[dict], model_name: str, k: int) -> float | None:
    """MAML's peak memory (MiB) at ``k`` on the line through its two largest measured Ks."""
    done = sorted((r["k"], r["peak_mib"]) for r in rows
                  if r["model"] == model_name and r["method"] == "maml" and "peak_mib" in r)
    if len(done) < 2:
        return None
    (k1, m1), (k2, m2) = done[-2:]
    return m2 + (m2 - m1) / (k2 - k1) * (k - k2)


def table(rows: list[dict]) -> str:
    lines = ["| model | method | K | peak memory above the model's (MiB) | seconds per meta-step | per step (ms) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['method']} | {r['k']} | {r['skipped']} | - | - |")
        elif "error" in r:
            lines.append(f"| {r['model']} | {r['method']} | {r['k']} | failed: {r['error']} | - | - |")
        else:
            lines.append(f"| {r['model']} | {r['method']} | {r['k']} | {r['peak_mib']:.1f} | {r['seconds']:.2f} | "
                         f"{1000 * r['seconds'] / r['k']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=110)
    for col, model_name in enumerate(MODELS):
        for method in METHODS:
            done = [r for r in rows if r["model"] == model_name and r["method"] == method and "peak_mib" in r]
            if not done:
                continue
            ks = [r["k"] for r in done]
            axes[0, col].plot(ks, [max(r["peak_mib"], 0.1) for r in done], marker="o", label=method)
            axes[1, col].plot(ks, [r["seconds"] for r in done], marker="o", label=method)
        axes[0, col].set_title(model_name)
        for row, label in enumerate(("peak memory above the model's (MiB)", "seconds per meta-step")):
            axes[row, col].set_xscale("log")
            axes[row, col].set_yscale("log")
            axes[row, col].set_xlabel("inner steps K")
            axes[row, col].set_ylabel(label)
            if axes[row, col].lines:
                axes[row, col].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(out: Path, rows: list[dict]) -> None:
    """The JSON (atomically: a kill while writing leaves the previous file) and the
    Markdown table, rows in (model, method, K) order."""
    from leap.util.files import atomic_write_json, atomic_write_text

    rows = sorted(rows, key=lambda r: (MODELS.index(r["model"]), METHODS.index(r["method"]), r["k"]))
    atomic_write_json(out, {"rows": rows, "python": sys.version.split()[0]})
    atomic_write_text(out.with_suffix(".md"), table(rows))


def machine() -> str:
    """The processor's model name and the number of CPUs, recorded with each measured point."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    return f"{os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "METHOD", "K"), help=argparse.SUPPRESS)
    parser.add_argument("--ks", default="10,100,1000,5000")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--maml-cap-gib", type=float, default=8.0)
    parser.add_argument("--quick", action="store_true", help="K = 2, 4 only")
    parser.add_argument("--out", default="horizon.json")
    args = parser.parse_args()
    if args.child:
        model_name, method, k = args.child
        print(json.dumps(measure(model_name, method, int(k))))
        return
    ks = [2, 4] if args.quick else [int(k) for k in args.ks.split(",")]
    models, methods = args.models.split(","), args.methods.split(",")
    unknown = [m for m in models if m not in MODELS] + [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown model(s) or method(s) {unknown}; models {list(MODELS)}, methods {list(METHODS)}")
    out = Path(args.out)
    # Measured points already in --out are kept (a run stopped part-way continues); every
    # other point of this run's plan (failed, skipped by the MAML cap, new) is decided
    # again, and each is written as soon as it is measured.
    rows: list[dict] = json.loads(out.read_text())["rows"] if out.exists() else []
    # a point of the one-pass protocol (no trimmed memory run) is measured again
    measured = {(r["model"], r["method"], r["k"]) for r in rows if "peak_mib" in r and "seconds_trimming" in r}
    plan = [(model_name, method, k) for model_name in models for k in ks for method in methods]
    rows = [r for r in rows if (r["model"], r["method"], r["k"]) in measured or
            (r["model"], r["method"], r["k"]) not in plan]
    # The methods of one K run back to back, so a change in the machine's load between Ks
    # moves them together rather than one method's whole row.
    for model_name, method, k in plan:
        if (model_name, method, k) in measured:
            continue
        rows = [r for r in rows if (r["model"], r["method"], r["k"]) != (model_name, method, k)]
        predicted = maml_prediction(rows, model_name, k) if method == "maml" else None
        if predicted is not None and predicted > 1024 * args.maml_cap_gib:
            rows.append({"model": model_name, "method": method, "k": k,
                         "skipped": f"not run: about {predicted / 1024:.1f} GiB predicted, over the "
                                    f"{args.maml_cap_gib:g} GiB cap"})
        else:
            rows.append({**measure_point(model_name, method, k), "machine": machine()})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        write(out, rows)
    write(out, rows)
    try:
        plot(rows, out.with_suffix(".png"))
    except ImportError:
        pass
    print(f"wrote {out}, {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
