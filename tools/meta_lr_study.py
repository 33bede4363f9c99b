"""The meta learning rate a user can trust (issue 30, point 1): Leap against Reptile across
meta-optimizers and rates, on two problems written as a user would write them.

Each problem is a family of tasks trained by K plain SGD steps from θ0; a meta-learner
watches the loop through the hook (``init_task``, ``to``, ``update``, ``end_task``,
``normalize``) and a torch optimizer applies the meta-gradient. After meta-training, θ0 is
trained for the same K steps on held-out tasks (the same tasks and batches for every
initialization) and scored on fresh points of each task.

- ``sinusoid``: y = a sin(x + b), a ~ U(0.1, 5), b ~ U(0, π); MLP 1-40-40-1, K = 10 SGD steps
  (lr 0.01, batches of 10); score: query MSE (lower is better). As examples/sinusoid.py.
- ``circle``: is a point of [-1, 1]² inside a random circle (centre ~ U(-0.5, 0.5)², radius
  ~ U(0.3, 0.8))?; MLP 2-64-64-2, K = 10 SGD steps (lr 0.1, batches of 32); score: query
  accuracy (higher is better).

    python tools/meta_lr_study.py --problem circle --out /tmp/circle.json
    python tools/meta_lr_study.py --problem sinusoid --seeds 3 --meta-steps 300
    python tools/meta_lr_study.py --table results/meta-lr/circle.json   # the docs' table

Writes one JSON record per (learner, optimizer, rate, seed) and prints a Markdown table: per
meta-optimizer and rate, each learner's mean over seeds with its 95% interval, and the
paired difference Leap - Reptile (a seed fixes the meta-training tasks; every run is scored
on the same held-out tasks).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import leap
from leap.util.stats import format_ci
from leap.util.threads import thread_policy

Task = tuple[float, ...]


@dataclass(frozen=True)
class Problem:
    name: str
    inner_lr: float
    batch: int
    higher_is_better: bool

    def model(self) -> nn.Module:
        raise NotImplementedError

    def task(self, g: torch.Generator) -> Task:
        raise NotImplementedError

    def sample(self, task: Task, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, out: torch.Tensor, y: torch.Tensor) -> float:
        raise NotImplementedError


class Sinusoid(Problem):
    def model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))

    def task(self, g: torch.Generator) -> Task:
        return 0.1 + 4.9 * torch.rand((), generator=g).item(), math.pi * torch.rand((), generator=g).item()

    def sample(self, task: Task, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = 10 * torch.rand(n, 1, generator=g) - 5
        return x, task[0] * torch.sin(x + task[1])

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(out, y)

    def score(self, out: torch.Tensor, y: torch.Tensor) -> float:
        return nn.functional.mse_loss(out, y).item()


class Circle(Problem):
    def model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))

    def task(self, g: torch.Generator) -> Task:
        cx, cy = (torch.rand(2, generator=g) - 0.5).tolist()
        return cx, cy, 0.3 + 0.5 * torch.rand((), generator=g).item()

    def sample(self, task: Task, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = 2 * torch.rand(n, 2, generator=g) - 1
        inside = (x - torch.tensor(task[:2])).norm(dim=1) < task[2]
        return x, inside.long()

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y)

    def score(self, out: torch.Tensor, y: torch.Tensor) -> float:
        return (out.argmax(1) == y).float().mean().item()


PROBLEMS: dict[str, Problem] = {
    "sinusoid": Sinusoid("sinusoid", inner_lr=0.01, batch=10, higher_is_better=False),
    "circle": Circle("circle", inner_lr=0.1, batch=32, higher_is_better=True),
}
LEARNERS = {
    "leap": lambda model: leap.Leap(model, metric="length"),
    "reptile": lambda model: leap.Reptile(model),
    "fomaml": lambda model: leap.FOMAML(model),
}


def train_task(problem: Problem, model: nn.Module, task: Task, steps: int, g: torch.Generator,
               learner: leap.MetaLearner | None = None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=problem.inner_lr)
    for _ in range(steps):
        x, y = problem.sample(task, problem.batch, g)
        loss = problem.loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        if learner is not None:
            learner.update(loss, model)
        opt.step()
    if learner is not None:
        x, y = problem.sample(task, problem.batch, g)
        with torch.no_grad():
            learner.end_task(model, problem.loss(model(x), y))


def meta_train(problem: Problem, learner_name: str, optimizer: str, lr: float, seed: int,
               meta_steps: int, meta_batch: int, steps: int) -> nn.Module:
    torch.manual_seed(seed)
    model = problem.model()
    learner = LEARNERS[learner_name](model)
    meta_opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(learner.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1000 + seed)
    for _ in range(meta_steps):
        for _ in range(meta_batch):
            learner.init_task()
            learner.to(model)
            train_task(problem, model, problem.task(g), steps, g, learner)
        learner.normalize()
        meta_opt.step()
        meta_opt.zero_grad()
    learner.to(model)
    return model


def held_out(problem: Problem, init: nn.Module, tasks: int, steps: int) -> float:
    """Mean query score after ``steps`` SGD steps from ``init`` on ``tasks`` held-out tasks
    (seed 7: the same tasks and batches for every initialization)."""
    g = torch.Generator().manual_seed(7)
    scores = []
    for _ in range(tasks):
        task = problem.task(g)
        model = problem.model()
        model.load_state_dict(init.state_dict())
        train_task(problem, model, task, steps, g)
        x, y = problem.sample(task, 200, g)
        with torch.no_grad():
            scores.append(problem.score(model(x), y))
    return sum(scores) / len(scores)


def read_records(path: Path) -> list[dict]:
    """The records of ``path``. A record naming a ``source`` (a run's eval-test.json, path
    from the repository root) instead of a ``score`` is one seed of a CLI run: its score per
    held-out task is read from there (test error in %), so the table and the run agree."""
    records = json.loads(path.read_text())
    for r in records:
        if "score" not in r:
            errors = json.loads((Path(__file__).resolve().parents[1] / r["source"]).read_text())["test_errors"]
            r["task_scores"] = [100 * e for e in errors]
            r["score"] = sum(r["task_scores"]) / len(errors)
    return records


def markdown_table(records: list[dict], digits: int) -> str:
    """Rows (optimizer, rate); columns: each learner's mean ± 95% interval over seeds, and
    Leap - Reptile paired by seed; the random init's score in the last row. With one seed
    whose records hold per-task scores (a CLI run), the intervals are over the held-out
    tasks and the difference is paired by task."""
    by_task = len({r["seed"] for r in records}) == 1 and all("task_scores" in r for r in records)
    scores: dict[tuple[str, str, float], dict[int, float]] = {}
    for r in records:
        values = dict(enumerate(r["task_scores"])) if by_task else {r["seed"]: r["score"]}
        scores.setdefault((r["optimizer"], r["learner"], r["lr"]), {}).update(values)
    learners = [n for n in LEARNERS if any(k[1] == n for k in scores)]
    rows = sorted({(o, lr) for o, n, lr in scores if n != "none"})
    lines = ["| meta-optimizer | " + " | ".join(n.capitalize().replace("Fomaml", "FOMAML") for n in learners)
             + " | Leap - Reptile (paired) |", "|---" * (len(learners) + 2) + "|"]
    for optimizer, lr in rows:
        cells = [format_ci(list(scores[(optimizer, n, lr)].values()), digits)
                 if (optimizer, n, lr) in scores else "" for n in learners]
        leap_, reptile = scores.get((optimizer, "leap", lr), {}), scores.get((optimizer, "reptile", lr), {})
        shared = sorted(set(leap_) & set(reptile))
        diff = format_ci([leap_[s] - reptile[s] for s in shared], digits) if shared else ""
        lines.append(f"| {'SGD' if optimizer == 'sgd' else 'Adam'} {lr:g} | " + " | ".join(cells) + f" | {diff} |")
    none = [r["score"] for r in records if r["learner"] == "none"]
    if none:
        lines.append(f"| random init | {format_ci(none, digits)} |" + " |" * len(learners))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, help="print the Markdown table of this JSON file and stop")
    p.add_argument("--digits", type=int, default=3, help="--table's decimals")
    p.add_argument("--problem", choices=sorted(PROBLEMS))
    p.add_argument("--out", type=Path, help="JSON file (records are appended to one already there)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--meta-steps", type=int, default=300)
    p.add_argument("--meta-batch", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="K, the inner SGD steps per task")
    p.add_argument("--tasks", type=int, default=100, help="held-out tasks")
    p.add_argument("--sgd", default="0.003,0.01,0.03,0.1,0.3,1,3", help="SGD meta learning rates")
    p.add_argument("--adam", default="0.0003,0.001,0.003,0.01,0.03", help="Adam meta learning rates")
    p.add_argument("--learners", default="leap,reptile")
    args = p.parse_args()
    if args.table is not None:
        print(markdown_table(read_records(args.table), args.digits))
        return
    if args.problem is None or args.out is None:
        p.error("--problem and --out (or --table)")
    problem = PROBLEMS[args.problem]
    records = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["learner"], r["optimizer"], r["lr"], r["seed"]) for r in records}
    grid = [(optimizer, float(v)) for optimizer, rates in (("sgd", args.sgd), ("adam", args.adam))
            for v in rates.split(",") if v]
    for seed in range(args.seeds):
        if ("none", "-", 0.0, seed) not in done:
            torch.manual_seed(seed)
            records.append(dict(learner="none", optimizer="-", lr=0.0, seed=seed, seconds=0.0,
                                score=held_out(problem, problem.model(), args.tasks, args.steps)))
        for learner in args.learners.split(","):
            for optimizer, lr in grid:
                if (learner, optimizer, lr, seed) in done:
                    continue
                start = time.perf_counter()
                init = meta_train(problem, learner, optimizer, lr, seed, args.meta_steps, args.meta_batch, args.steps)
                score = held_out(problem, init, args.tasks, args.steps)
                records.append(dict(learner=learner, optimizer=optimizer, lr=lr, seed=seed, score=score,
                                    seconds=round(time.perf_counter() - start, 2)))
                print(f"{learner} {optimizer} {lr:g} seed {seed}: {score:.4f} ({records[-1]['seconds']:.1f} s)",
                      flush=True)
        args.out.write_text(json.dumps(records, indent=1))
    print(markdown_table(records, digits=4))


if __name__ == "__main__":
    with thread_policy(None, small_model=True):
        main()
