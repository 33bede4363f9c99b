"""Analyses of the paper's appendices: the Jacobian approximation (appendix B, Figure 5)
and the ablation of Leap's options (appendix C, Figure 6)."""

from __future__ import annotations

from pathlib import Path


def write_analysis_report(directory: str | Path) -> list[Path]:
    """Redraw the tables and figures of an ablation (ablation.json) or Jacobian study
    (jacobian.json) directory, or of a directory of ablations, one per seed (each redrawn,
    then the table over seeds); ``[]`` if ``directory`` holds none (``leap report``)."""
    from leap.experiments.analysis.ablation import (
        seed_directories,
        write_ablation_report,
        write_ablation_seeds_report,
    )
    from leap.experiments.analysis.jacobian import write_jacobian_report

    directory = Path(directory)
    paths: list[Path] = []
    if (directory / "ablation.json").is_file():
        paths += write_ablation_report(directory)
    elif seeds := seed_directories(directory):
        # The table over seeds first: it refuses ablations that cannot be paired before
        # anything is written; then each seed's own table.
        paths += write_ablation_seeds_report(directory)
        for sub in seeds:
            paths += write_ablation_report(sub)
    if (directory / "jacobian.json").is_file():
        paths += write_jacobian_report(directory)
    return paths
