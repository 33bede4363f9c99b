"""The Jacobian study's table and Figure 5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leap.experiments.analysis.jacobian.protocol import JacobianProtocol
from leap.util.files import atomic_write_text, read_json_record, save_figure


# ---------------------------------------------------------------------- report
def write_jacobian_report(out: Path) -> list[Path]:
    """jacobian.md (ρ at the reported steps, mean ± std over tasks) and jacobian.png
    (Figure 5: ρ against the step, log scale, one line per learning rate) from
    ``out``/jacobian.json. Returns the paths written."""
    result = read_json_record(Path(out) / "jacobian.json", ("protocol", "runs"))
    protocol = JacobianProtocol(**result["protocol"])
    steps = protocol.reported_steps()
    data_note = ("Omniglot" if protocol.data == "omniglot"
                 else "SYNTHETIC random pixels and labels (not Omniglot; a smoke test)")
    model_note = "" if protocol.filters == 64 else f" (reduced model: {protocol.filters} filters, not the paper's 64)"
    lines = [
        "# Appendix B: relative precision of the identity approximation of J_i(θ0)",
        "",
        f"ρ_i = ||I - J_i||_1 / ||J_i||_1 (nuclear norms) on the first-layer block "
        f"({', '.join(result['block']['parameters'])}: {result['block']['size']} parameters), after i SGD "
        f"steps from a random initialization of the ConvNet{model_note}. Data: {data_note}, split "
        f"'{protocol.split}', batch {protocol.batch}, seed {protocol.seed}. Mean ± std over tasks.",
        "",
        "| learning rate | tasks | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for lr in protocol.lrs:
        s = result["summary"].get(repr(lr))
        if s is None:
            continue
        cells = [f"{s['mean'][i - 1]:.2e} ± {s['std'][i - 1]:.1e}" for i in steps]
        lines.append(f"| {lr} | {s['tasks']} | " + " | ".join(cells) + " |")
    seconds = sum(r["seconds"] for r in result["runs"])
    env = result["environment"]
    lines += ["", f"Compute: {seconds:.0f} s over {len(result['runs'])} (task, lr) pairs on {env['device']} "
              f"({env['threads']} threads, torch {env['torch']}).", ""]
    md = Path(out) / "jacobian.md"
    atomic_write_text(md, "\n".join(lines))
    return [md, plot_jacobian(result, Path(out) / "jacobian.png")]


def plot_jacobian(result: dict[str, Any], path: Path) -> Path:
    """Figure 5: mean ρ over tasks against the step (log scale), min-max band over tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocol = JacobianProtocol(**result["protocol"])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    marks = protocol.reported_steps()
    for lr in protocol.lrs:
        s = result["summary"].get(repr(lr))
        if s is None:
            continue
        x = list(range(1, len(s["mean"]) + 1))
        # ρ is exactly 0 at lr 0: nothing to draw on a log axis.
        if max(s["max"]) <= 0:
            continue
        line, = ax.plot(x, s["mean"], label=f"lr {lr} ({s['tasks']} tasks)")
        ax.fill_between(x, s["min"], s["max"], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.plot(marks, [s["mean"][i - 1] for i in marks], "o", color=line.get_color())
    ax.set_yscale("log")
    ax.set_xticks(marks)
    ax.set_xlabel("step i")
    ax.set_ylabel("ρ = ||I - J_i||₁ / ||J_i||₁")
    title = "Relative precision of J ≈ I, first layer"
    if protocol.filters != 64:
        title += f" ({protocol.filters}-filter ConvNet)"
    if protocol.data != "omniglot":
        title += " [SYNTHETIC DATA]"
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
