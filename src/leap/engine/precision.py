"""The arithmetic a task's forward and backward passes may run in, declared without torch
(the command line offers ``--precision`` from it); ``leap.engine.inner`` implements each
(``precision_context``) and checks a choice against the device (``check_precision``)."""

from __future__ import annotations

#: Arithmetic of a task's forward and backward passes; parameters, their gradients, θ0
#: and the meta-gradient stay float32 in every case. bf16: ``torch.autocast`` to
#: bfloat16 (CPU and CUDA); tf32: TensorFloat-32 matmuls and convolutions (CUDA only).
PRECISIONS = ("fp32", "bf16", "tf32")
