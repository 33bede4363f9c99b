"""Leap's meta-gradient (paper eq. 8, identity Jacobians, stabilizer) as a specification.

The reference below is independent of the hook: for every segment of a recorded
trajectory it builds the frozen-forward-point distance of eq. 5 as a function of θ_i and
differentiates it with autograd.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import leap


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def record_trajectory(model, optimizer_cls, steps, learner=None, lr=0.2):
    """Train ``model`` and return [(params_i, batch_i)] for i = 0..K (batch_K is for f(θ_K))."""
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(3, (8,), generator=g))
               for _ in range(steps + 1)]
    opt = optimizer_cls(model.parameters(), lr=lr)
    points = []
    for i in range(steps):
        points.append({n: p.detach().clone() for n, p in model.named_parameters()})
        x, y = batches[i]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if learner is not None:
            learner.update(loss, model)
        opt.step()
    points.append({n: p.detach().clone() for n, p in model.named_parameters()})
    if learner is not None:
        x, y = batches[steps]
        learner.end_task(model, F.cross_entropy(model(x), y))
    return points, batches


def reference_meta_gradient(model, points, batches, metric, loss_in_manifold, stabilizer):
    """Σ_i ∂/∂θ_i of the segment term of eq. 5 with the forward point (θ_{i+1}, f_{i+1}) frozen.

    Energy: ½ d_i², length: d_i, with d_i² = ||θ_{i+1} - θ||² + (f̂_{i+1} - f(θ))²; the
    stabilizer sets the frozen loss target to f(θ_i) - |Δf_i| and keeps n_i = d_i(θ_i).
    """
    names = list(points[0])

    def loss_at(params, batch):
        x, y = batch
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    total = {n: torch.zeros_like(points[0][n]) for n in names}
    for i in range(len(points) - 1):
        theta = {n: points[i][n].clone().requires_grad_(True) for n in names}
        f_i = loss_at(theta, batches[i])
        with torch.no_grad():
            f_next = loss_at(points[i + 1], batches[i + 1])
            delta_f = f_next - f_i
            target = f_i - delta_f.abs() if stabilizer else f_next
            sq_dtheta = sum(((points[i + 1][n] - points[i][n]) ** 2).sum() for n in names)
            n_i = torch.sqrt(sq_dtheta + (delta_f**2 if loss_in_manifold else 0.0)) if metric == "length" else 1.0
        term = 0.5 * sum(((points[i + 1][n] - theta[n]) ** 2).sum() for n in names)
        if loss_in_manifold:
            term = term + 0.5 * (target - f_i) ** 2
        grads = torch.autograd.grad(term / n_i, [theta[n] for n in names])
        for n, gr in zip(names, grads):
            total[n] += gr
    return total


@pytest.mark.parametrize(
    "metric,loss_in_manifold,stabilizer,optimizer",
    [(m, lm, s, o) for m, lm, s in itertools.product(["length", "energy"], [True, False], [True, False])
     for o in ["sgd", "adam"]],
)
def test_hook_equals_eq8_reference(metric, loss_in_manifold, stabilizer, optimizer):
    model = tiny_model()
    learner = leap.Leap(model, metric=metric, loss_in_manifold=loss_in_manifold, stabilizer=stabilizer)
    learner.init_task()
    learner.to(model)
    opt_cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    lr = 0.3 if optimizer == "sgd" else 0.05
    points, batches = record_trajectory(model, opt_cls, steps=5, learner=learner, lr=lr)
    assert int(learner.normalize()) == 1
    expected = reference_meta_gradient(model, points, batches, metric, loss_in_manifold, stabilizer)
    for name, p in learner.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-9, atol=1e-12)


def test_energy_without_loss_or_stabilizer_is_reptile_direction():
    model = tiny_model()
    learner = leap.Leap(model, metric="energy", loss_in_manifold=False, stabilizer=False)
    learner.init_task()
    learner.to(model)
    points, _ = record_trajectory(model, torch.optim.SGD, steps=6, learner=learner)
    learner.normalize()
    for name, p in learner.named_parameters():
        torch.testing.assert_close(p.grad, points[0][name] - points[-1][name])


class Point(nn.Module):
    """A model that is just a parameter vector, so each point of a path can be set by hand."""

    def __init__(self, values):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(values, dtype=torch.float64))


def visit(learner, model, theta, loss, grad):
    with torch.no_grad():
        model.theta.copy_(torch.tensor(theta, dtype=torch.float64))
    model.theta.grad = torch.tensor(grad, dtype=torch.float64)
    learner.update(torch.tensor(loss, dtype=torch.float64), model)


def test_length_metric_normalizes_each_segment():
    # Two segments of very different lengths contribute unit vectors: -(Δθ)/||Δθ||.
    model = Point([0.0, 0.0])
    learner = leap.Leap(model, metric="length", loss_in_manifold=False, stabilizer=False)
    learner.init_task()
    visit(learner, model, [0.0, 0.0], 1.0, [0.0, 0.0])
    visit(learner, model, [3.0, 4.0], 0.5, [0.0, 0.0])  # length 5
    visit(learner, model, [3.0, 4.01], 0.4, [0.0, 0.0])  # length 0.01
    learner.normalize()
    torch.testing.assert_close(model.theta.new_tensor([-0.6, -1.8]), next(learner.parameters()).grad)


def test_length_metric_with_loss_uses_graph_distance():
    model = Point([0.0])
    learner = leap.Leap(model, metric="length", loss_in_manifold=True, stabilizer=False)
    learner.init_task()
    visit(learner, model, [0.0], 2.0, [1.0])
    visit(learner, model, [3.0], 6.0, [0.0])  # Δθ = 3, Δf = 4: n = 5
    learner.normalize()
    # g = -(Δθ + Δf ∇f(θ_0)) / n = -(3 + 4 * 1) / 5
    torch.testing.assert_close(next(learner.parameters()).grad, torch.tensor([-7 / 5], dtype=torch.float64))


@pytest.mark.parametrize("loss_after", [0.5, 1.5])  # the loss falls, then rises
def test_stabilizer_always_follows_the_descent_direction(loss_after):
    model = Point([0.0])
    grad_at_start = 2.0
    plain = leap.Leap(model, metric="energy", loss_in_manifold=True, stabilizer=False)
    stable = leap.Leap(model, metric="energy", loss_in_manifold=True, stabilizer=True)
    for learner in (plain, stable):
        learner.init_task()
        visit(learner, model, [0.0], 1.0, [grad_at_start])
        visit(learner, model, [0.0], loss_after, [0.0])  # Δθ = 0: only the loss term remains
        learner.normalize()
    delta_f = loss_after - 1.0
    g_plain = next(plain.parameters()).grad.item()
    g_stable = next(stable.parameters()).grad.item()
    assert g_plain == pytest.approx(-delta_f * grad_at_start)
    # -(-|Δf|) ∇f: the meta-step θ0 - β g always moves θ0 down the task gradient.
    assert g_stable == pytest.approx(abs(delta_f) * grad_at_start)


def test_meta_gradient_is_mean_over_tasks():
    model = Point([0.0])
    learner = leap.Leap(model, metric="energy", loss_in_manifold=False, stabilizer=False)
    for end in (2.0, 4.0):
        learner.init_task()
        visit(learner, model, [0.0], 1.0, [0.0])
        visit(learner, model, [end], 1.0, [0.0])
    assert int(learner.normalize()) == 2
    assert next(learner.parameters()).grad.item() == pytest.approx(-3.0)


def test_last_segment_counts_only_with_end_task():
    model = Point([0.0])
    learner = leap.Leap(model, metric="energy", loss_in_manifold=False, stabilizer=False)
    learner.init_task()
    visit(learner, model, [0.0], 1.0, [0.0])
    with torch.no_grad():
        model.theta.fill_(5.0)  # the optimizer's final step, never seen by update
    learner.normalize()
    assert next(learner.parameters()).grad.item() == 0.0
    learner.init_task()
    visit(learner, model, [0.0], 1.0, [0.0])
    with torch.no_grad():
        model.theta.fill_(5.0)
    next(learner.parameters()).grad = None
    learner.end_task(model, torch.tensor(0.5, dtype=torch.float64))
    learner.normalize()
    assert next(learner.parameters()).grad.item() == -5.0


@pytest.mark.parametrize(
    "metric,loss_in_manifold,stabilizer",
    list(itertools.product(["length", "energy"], [True, False], [True, False])),
)
def test_segment_with_tensor_scalars_equals_segment_with_float_scalars(metric, loss_in_manifold, stabilizer):
    # A CPU hook keeps f, Δf and n_i as Python floats, a GPU hook as 0-dim tensors (no host
    # sync): both forms of eq. 8's one function must add the same g_i.
    from leap.learners.leap import accumulate_segment_

    g = torch.Generator().manual_seed(0)
    shapes = [(6, 4), (6,), (3, 6)]
    prev_params, prev_grads, params = ([torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
                                       for _ in range(3))
    start = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    options = dict(metric=metric, loss_in_manifold=loss_in_manifold, stabilizer=stabilizer, eps=1e-12)
    results = []
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    for prev_loss, loss in ((1.25, 0.5), (as_tensor(1.25), as_tensor(0.5))):
        acc = [t.clone() for t in start]
        accumulate_segment_(acc, [t.clone() for t in prev_params], prev_grads, prev_loss, params, loss, **options)
        results.append(acc)
    for from_floats, from_tensors, before in zip(*results, start, strict=True):
        assert not torch.equal(from_floats, before)  # the segment added something
        torch.testing.assert_close(from_floats, from_tensors, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("metric, loss_in_manifold, expected", [
    ("energy", True, 25.25 + 1.0), ("energy", False, 25.0 + 1.0),
    ("length", True, 25.25 ** 0.5 + 1.0), ("length", False, 5.0 + 1.0),
])
def test_last_path_is_the_finished_tasks_meta_objective(metric, loss_in_manifold, expected):
    # The path (0,0) f=1 -> (3,4) f=0.5 -> (3,5) f=0.5: eq. 5's length or energy of γ.
    model = Point([0.0, 0.0])
    learner = leap.Leap(model, metric=metric, loss_in_manifold=loss_in_manifold, stabilizer=True)
    assert learner.last_path != learner.last_path  # NaN before any task ended
    learner.init_task()
    visit(learner, model, [0.0, 0.0], 1.0, [0.0, 0.0])
    visit(learner, model, [3.0, 4.0], 0.5, [0.0, 0.0])
    with torch.no_grad():
        model.theta.copy_(torch.tensor([3.0, 5.0], dtype=torch.float64))
    learner.end_task(model, torch.tensor(0.5, dtype=torch.float64))
    assert learner.last_path == pytest.approx(expected, rel=1e-12)
    learner.init_task()  # the next task starts a new path
    visit(learner, model, [0.0, 0.0], 1.0, [0.0, 0.0])
    learner.end_task(model, torch.tensor(1.0, dtype=torch.float64))
    assert learner.last_path == pytest.approx(0.0)
