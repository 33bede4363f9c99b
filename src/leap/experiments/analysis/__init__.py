"""Analyses of the paper's appendices: the Jacobian approximation (appendix B, Figure 5)
and the ablation of Leap's options (appendix C, Figure 6)."""

from __future__ import annotations

from pathlib import Path


def write_analysis_report(directory: str | Path) -> list[Path]:
    """Redraw the tables and figures of an ablation (ablation.json) or Jacobian study
    (jacobian.json) directory; ``[]`` if ``directory`` holds neither (``leap report``)."""
    from leap.experiments.analysis.ablation import write_ablation_report
    from leap.experiments.analysis.jacobian import write_jacobian_report

    directory = Path(directory)
    paths: list[Path] = []
    if (directory / "ablation.json").is_file():
        paths += write_ablation_report(directory)
    if (directory / "jacobian.json").is_file():
        paths += write_jacobian_report(directory)
    return paths
