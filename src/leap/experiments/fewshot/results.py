"""Evaluation results on disk (``eval-<split>.json``) and whether one belongs to a run.

A result file names its source: the evaluation settings that decide its numbers and the
sha256 of the init file it evaluated. ``compare``, ``sweep``, ``ablation`` and ``report``
take a result as a run's only when both match the run as it is now (its config.json and
its init.safetensors); anything else is re-evaluated or left out with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leap.experiments.config import RunConfig
from leap.experiments.methods import METHODS
from leap.experiments.registry import get_benchmark
from leap.util.files import file_sha256, read_optional_record

#: Run fields that decide an evaluation's numbers besides the init (the engine and the
#: device decide only its rounding). Together with the split and the method's head policy.
EVALUATION_FIELDS = ("benchmark", "seed", "eval_steps", "eval_batch", "eval_lr", "inner_optimizer", "inner_clip",
                     "precision", "pipeline", "bn_eval")


def eval_file(run_dir: Path, split: str = "test", meta_step: int | None = None) -> Path:
    """eval-<split>.json: the evaluation of the run's init; with ``meta_step``,
    eval-<split>-step-<meta_step>.json: of θ0 at that meta-step's checkpoint."""
    name = f"eval-{split}" if meta_step is None else f"eval-{split}-step-{meta_step:08d}"
    return Path(run_dir) / f"{name}.json"


def fresh_heads(cfg: RunConfig) -> bool:
    """Whether ``cfg``'s initialization is evaluated with a freshly initialized head on each
    task: multi-headed finetuning's, unless every task's labels mean the same thing
    (``shared_labels``: its one pretrained head is part of the initialization)."""
    return METHODS[cfg.method].fresh_head and not get_benchmark(cfg.benchmark).shared_labels


def evaluation_settings(cfg: RunConfig, split: str) -> dict[str, Any]:
    """What an evaluation of ``cfg``'s init on ``split`` depends on, besides the init."""
    return {"split": split, "fresh_heads": fresh_heads(cfg),
            **{name: getattr(cfg, name) for name in EVALUATION_FIELDS}}


def stamp(result: dict[str, Any], cfg: RunConfig, split: str, init_sha256: str) -> dict[str, Any]:
    """``result`` with its source recorded: the settings and the evaluated init's digest."""
    return {**result, "evaluation": evaluation_settings(cfg, split), "init_sha256": init_sha256}


def mismatch(result: dict[str, Any], cfg: RunConfig, split: str, init_sha256: str | None) -> str | None:
    """Why ``result`` is not the evaluation of ``cfg``'s run on ``split`` with the init
    whose digest is ``init_sha256`` (None: it is). ``init_sha256`` None: the directory
    holds no init (an archived run, as under results/): there is no other init the result
    could be mistaken for, and only its settings are checked."""
    recorded = result.get("evaluation")
    if not isinstance(recorded, dict) or "init_sha256" not in result:
        return "it records no evaluation settings or init digest (written by an older leap)"
    recorded = {"inner_clip": 0.0, **recorded}  # evaluations made before the option clipped nothing
    expected = evaluation_settings(cfg, split)
    differing = [k for k in expected if recorded.get(k) != expected[k]]
    if differing:
        return "it was made with other evaluation settings (" + ", ".join(
            f"{k} {recorded.get(k)!r}, the run's {expected[k]!r}" for k in differing) + ")"
    if init_sha256 is not None and result["init_sha256"] != init_sha256:
        return "it evaluated another initialization than the run's init.safetensors"
    return None


def read_result(run_dir: Path, cfg: RunConfig, split: str = "test") -> tuple[dict[str, Any] | None, str | None]:
    """``(result, None)`` when ``run_dir``'s eval-<split>.json is the evaluation of the run
    ``cfg`` as it is now; else ``(None, why)`` (why is None when there is no file)."""
    path = eval_file(run_dir, split)
    result, why = read_optional_record(path)
    if result is None:
        return None, why
    why = mismatch(result, cfg, split, file_sha256(Path(run_dir) / "init.safetensors"))
    return (None, f"{path.name}: {why}") if why else (result, None)
