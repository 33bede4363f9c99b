"""Table 1's shape with the paper's Table 4 beside ours."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from leap.experiments.multicv.config import METHOD_LABELS, TABLE_METHODS
from leap.experiments.multicv.results import read_result
from leap.tasks.multicv import display_name
from leap.util.errors import CorruptFileError
from leap.util.files import atomic_write_bytes, atomic_write_json, read_json_record
from leap.util.stats import format_ci

PAPER_TABLE4: dict[str, dict[str, tuple[float, float, float]]] = {
    "facescrub": {"leap": (19.9, 0.0, 11.6), "finetune": (32.7, 0.0, 13.2), "progressive": (18.0, 0.0, 8.9),
                  "hat": (25.6, 0.1, 14.6), "none": (18.2, 0.0, 10.5)},
    "notmnist": {"leap": (5.3, 0.6, 2.9), "finetune": (5.4, 2.0, 4.4), "progressive": (5.4, 3.1, 3.7),
                 "hat": (6.0, 2.8, 5.4), "none": (5.4, 2.6, 5.1)},
    "mnist": {"leap": (0.7, 0.1, 0.6), "finetune": (0.9, 0.1, 0.8), "progressive": (0.8, 0.0, 0.7),
              "hat": (0.8, 0.3, 1.2), "none": (0.9, 0.2, 1.0)},
    "fashion-mnist": {"leap": (8.0, 4.2, 6.8), "finetune": (8.9, 3.8, 7.0), "progressive": (8.7, 5.4, 9.2),
                      "hat": (9.5, 5.5, 8.1), "none": (8.4, 4.7, 7.8)},
    "cifar10": {"leap": (21.2, 10.8, 17.5), "finetune": (27.4, 13.3, 20.7), "progressive": (24.2, 15.2, 24.0),
                "hat": (27.7, 21.2, 27.3), "none": (26.2, 13.1, 23.0)},
    "svhn": {"leap": (8.4, 5.6, 7.5), "finetune": (10.9, 6.1, 10.5), "progressive": (10.1, 6.3, 13.8),
             "hat": (10.5, 5.7, 8.5), "none": (10.3, 6.9, 11.5)},
    "cifar100": {"leap": (52.0, 30.5, 43.4), "finetune": (59.2, 31.5, 44.1), "progressive": (55.7, 42.1, 54.6),
                 "hat": (62.0, 49.8, 58.4), "none": (54.8, 33.1, 50.1)},
    "gtsrb": {"leap": (2.9, 0.0, 1.2), "finetune": (5.7, 0.0, 1.7), "progressive": (3.6, 0.0, 4.0),
              "hat": (5.4, 0.0, 2.3), "none": (3.6, 0.0, 2.4)},
}


def collect_results(directory: str | Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(config, result) of every finished run under ``directory`` (any depth)."""
    found = []
    for result_path in sorted(Path(directory).rglob("result.json")):
        try:
            config = read_json_record(result_path.parent / "config.json")
        except CorruptFileError as err:  # named, as the few-shot report does, not skipped in silence
            result, why = None, str(err)
        else:
            result, why = read_result(result_path.parent, config)
        if result is None:
            print(f"leap: report: left out {result_path.parent}: {why}", file=sys.stderr)
        elif {"held_out", "method", "test_error"} <= set(result):
            found.append((config, result))
    return found


def multicv_table(entries: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """Table 1's shape (held-out dataset x method; Test, Train, AUC), ours beside Table 4.
    Several seeds of one cell: the mean ± the half-width of its 95% interval over seeds (n)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _, r in entries:
        groups.setdefault((r["held_out"], r["method"]), []).append(r)
    paper_order = list(PAPER_TABLE4)
    keys = sorted(groups, key=lambda k: (paper_order.index(k[0]) if k[0] in paper_order else len(paper_order),
                                         k[0], TABLE_METHODS.index(k[1]) if k[1] in TABLE_METHODS else 99))
    lines = ["| Held-out task | Method | Test (%) | Train (%) | AUC | Paper Test (%) | Paper Train (%) | Paper AUC |",
             "|---|---|---|---|---|---|---|---|"]
    previous = None
    for held_out, method in keys:
        runs = groups[(held_out, method)]
        cells = [format_ci([100 * r[k] for r in runs]) for k in ("test_error", "train_error", "auc")]
        paper = PAPER_TABLE4.get(held_out, {}).get(method)
        paper_cells = [f"{v:.1f}" for v in paper] if paper else ["-", "-", "-"]
        task = display_name(held_out) if held_out != previous else ""
        previous = held_out
        lines.append(f"| {task} | {METHOD_LABELS.get(method, method)} | " + " | ".join(cells + paper_cells) + " |")
    return "\n".join(lines) + "\n"


def write_multicv_report(directory: str | Path) -> list[Path]:
    """Write ``multicv.md`` (Table 1-shaped, ours beside the paper's Table 4, with the
    protocol and the notes on splits) and ``multicv.json`` into ``directory``; returns
    their paths (an empty list when no run has finished)."""
    directory = Path(directory)
    entries = collect_results(directory)
    if not entries:
        return []
    budget_keys = ("meta_steps", "meta_batch", "task_epochs", "task_batch", "task_lr", "meta_lr", "eval_epochs",
                   "eval_batch", "eval_lr", "patience", "meta_patience", "check_every", "val_size", "sample_cap",
                   "test_cap", "metric", "seed")
    protocols = {json.dumps({k: c.get(k) for k in budget_keys}, sort_keys=True) for c, _ in entries}
    notes = sorted({n for _, r in entries for n in r.get("notes", [])})
    text = ["# Multi-CV results\n",
            "Rows: held-out dataset x method (Table 1's shape); Test and Train are error rates (%), AUC is the "
            "area under the training-error curve on the held-out dataset scaled to 0-100 (100 x mean minibatch "
            "training error over the steps taken); several seeds: mean ± the half-width of its 95% interval over seeds "
            "(Student's t, n seeds). Paper columns: Table 4 of Flennerhag et al. (2019).\n",
            multicv_table(entries), "\n## Protocol\n"]
    text += [f"- `{p}`" for p in sorted(protocols)]
    if len(protocols) > 1:
        text.append("\n**Warning: the runs above used different protocols.**")
    text += ["", "## Data notes", ""] + ([f"- {n}" for n in notes] or ["- none"])
    text += ["", "## Runs", "", "| Held-out | Method | Meta-steps | Eval steps | Pretrain (s) | Eval (s) |",
             "|---|---|---|---|---|---|"]
    for _, r in sorted(entries, key=lambda e: (e[1]["held_out"], e[1]["method"])):
        text.append(f"| {r['held_out']} | {r['method']} | {r['meta_steps']} | {r['eval_steps']}/{r['eval_max_steps']} "
                    f"| {r['pretrain_seconds']:.0f} | {r['eval_seconds']:.0f} |")
    md, js = directory / "multicv.md", directory / "multicv.json"
    atomic_write_bytes(md, ("\n".join(text) + "\n").encode())
    atomic_write_json(js, [{**{k: v for k, v in r.items() if k != "curve"}, "config": c} for c, r in entries])
    return [md, js]
