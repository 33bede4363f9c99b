"""Device strings: checked before any work is done."""

from __future__ import annotations

from leap.util.errors import UsageError


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, with one line naming ``--device``."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise UsageError(f"--device {device}: not a device (use cpu, cuda or cuda:N)") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"--device {device}: only cpu and cuda are supported")
