"""Appendix B: how good is the identity approximation J_i(θ0) ≈ I (Figure 5)?

Leap's meta-gradient (eq. 8) replaces the Jacobian J_i(θ0) = ∂θ_i/∂θ0 of a task's i-th
iterate with respect to the initialization by the identity. With plain SGD on fixed
minibatch losses f_j, θ_{j+1} = θ_j - α ∇f_j(θ_j), so (appendix B)

    J_{j+1}(θ0) = (I - α H_j) J_j(θ0),    J_0 = I,    H_j = ∇²f_j(θ_j),

and the relative precision of the approximation after i steps is

    ρ_i = ||I - J_i(θ0)||_1 / ||J_i(θ0)||_1      (Schatten 1-norm: the nuclear norm).

What is measured. Like the paper, the block of J_i for the first layer: B_i = ∂θ_i[L] /
∂θ0[L] with L the parameters of the network's first layer (for the Omniglot ConvNet the
first convolution's weight and bias, 64·1·3·3 + 64 = 640 numbers). Every parameter of the
network is trained in the inner loop, so B_i is the diagonal block of the full Jacobian;
it is also the Jacobian of the map θ0[L] -> θ_i[L] with the rest of θ0 held fixed (the two
are the same partial derivatives).

How. Forward mode: the n_L columns of J_i that belong to L are pushed through the SGD
recursion above, one Hessian-vector product per column and step, computed exactly as
``torch.func.jvp`` of ``torch.func.grad`` of the functional model (forward-over-reverse)
and vmapped over chunks of columns to bound memory. One pass gives B_i for every i ≤ K.
We carry the deviation D_i = J_i[:, L] - E (E embeds the identity), never J_i itself, so
I - B_i is read off without cancellation (in float32, 1 + 1e-6 keeps one digit of 1e-6).
Cost: K·n_L Hessian-vector products; memory: n_L × (number of parameters) numbers for D.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leap.experiments.analysis.jacobian.command import add_options, cmd_jacobian
from leap.experiments.analysis.jacobian.protocol import HELP, JacobianProtocol
from leap.experiments.analysis.jacobian.report import plot_jacobian, write_jacobian_report
from leap.util.lazy import lazy_attributes

if TYPE_CHECKING:
    from leap.experiments.analysis.jacobian.blocks import (
        Batch,
        LossFn,
        block_map,
        first_layer,
        relative_precision,
        schatten1,
        sgd_block_jacobians,
        sgd_step,
    )
    from leap.experiments.analysis.jacobian.study import (
        SyntheticImages,
        load_runs,
        run_study,
        study_batches,
        study_model,
    )

__all__ = [
    "HELP",
    "Batch",
    "JacobianProtocol",
    "LossFn",
    "SyntheticImages",
    "add_options",
    "block_map",
    "cmd_jacobian",
    "first_layer",
    "load_runs",
    "plot_jacobian",
    "relative_precision",
    "run_study",
    "schatten1",
    "sgd_block_jacobians",
    "sgd_step",
    "study_batches",
    "study_model",
    "write_jacobian_report",
]
# The command, its options and the report import without torch (the command line's); the
# Jacobians and the study are imported when one of their names is first used (leap.util.lazy).
__getattr__, __dir__ = lazy_attributes(__name__, {
    "leap.experiments.analysis.jacobian.blocks": (
        "Batch", "LossFn", "block_map", "first_layer", "relative_precision", "schatten1", "sgd_block_jacobians",
        "sgd_step",
    ),
    "leap.experiments.analysis.jacobian.study": (
        "SyntheticImages", "load_runs", "run_study", "study_batches", "study_model",
    ),
})
