"""Multi-CV's result.json and whether it belongs to a run: it names its source (the run's
configuration, which holds the evaluation settings, and the digest of the pretrained state
it evaluated), and a sweep or report takes it only when both match the run as it is now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leap.util.files import file_sha256, list_checkpoints, read_optional_record

#: How errors are computed (``training.error_rate``): over equal chunks of the images in a
#: fixed random order. Results without it were computed in the splits' class order, where
#: batch norm normalized each chunk by one to five classes' statistics (fixed 2026-12-03).
ERROR_ORDER = "shuffled"


def result_source(out: Path, config: dict[str, Any]) -> dict[str, Any]:
    """What produced a run's result.json: its configuration (which holds the evaluation
    settings), the sha256 of the newest checkpoint, the pretrained state it evaluated (None
    for a method without pretraining), and how its errors were computed."""
    found = list_checkpoints(out / "checkpoints")
    return {"config": config, "pretrained_sha256": file_sha256(found[-1][1]) if found else None,
            "error_order": ERROR_ORDER}


def read_result(out: Path, config: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """``(result, None)`` when ``out``'s result.json is the evaluation of the run ``config`` (its config.json)
    with the pretrained state now in ``out``; else ``(None, why)`` (why None: no file). A
    directory without checkpoints (an archived run) is checked on its configuration alone."""
    result, why = read_optional_record(Path(out) / "result.json")
    if result is None:
        return None, why
    if "config" not in result or "pretrained_sha256" not in result:
        return None, "result.json records no configuration or pretrained-state digest (written by an older leap)"
    if result["config"] != config:
        return None, "result.json was made by another configuration"
    if result.get("error_order") != ERROR_ORDER:
        return None, ("result.json computed its errors in the splits' class order (before 2026-12-03), where batch "
                      "norm used one to five classes' statistics per chunk: run the run's command again")
    now = result_source(out, config)["pretrained_sha256"]
    if now is not None and result["pretrained_sha256"] != now:  # None: archived without checkpoints
        return None, "result.json evaluated another pretrained state than the run's newest checkpoint"
    return result, None
