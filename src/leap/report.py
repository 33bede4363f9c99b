"""Tables (Markdown) and learning-curve plots of evaluation results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

METHOD_LABELS = {
    "leap": "Leap", "reptile": "Reptile", "fomaml": "FOMAML", "maml": "MAML",
    "finetune": "Finetuning (multi-headed)", "none": "No pretraining",
}


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per method, test error (mean ± std over tasks) and AUC."""
    lines = [
        "| Method | Test error (%) | AUC of training error (%) | Meta-training time (s) |",
        "|---|---|---|---|",
    ]
    for method, r in results.items():
        label = METHOD_LABELS.get(method, method)
        seconds = r.get("train_seconds")
        time_cell = f"{seconds:.1f}" if seconds is not None else "-"
        lines.append(
            f"| {label} | {100 * r['test_error']:.1f} ± {100 * r['test_error_std']:.1f} "
            f"| {100 * r['auc']:.1f} | {time_cell} |"
        )
    return "\n".join(lines) + "\n"


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(results: dict[str, dict[str, Any]], path: str | Path, title: str, window: int = 5) -> Path:
    """Mean training error on held-out tasks against task-training steps (Figure 3 left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method, r in results.items():
        curve = moving_average(r["curve"], window)
        ax.plot(range(1, len(curve) + 1), [100 * c for c in curve], label=METHOD_LABELS.get(method, method))
    ax.set_xlabel("training step on held-out task")
    ax.set_ylabel(f"training error (%), moving average {window}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
