"""Reptile, FOMAML and MAML against brute-force references on a tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import leap


def tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def batches(n, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randint(2, (6,), generator=g))
            for _ in range(n)]


def sgd_steps(model, data, lr):
    for x, y in data:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad


def test_reptile_meta_gradient_is_theta0_minus_thetaK():
    model = tiny()
    theta0 = [p.detach().clone() for p in model.parameters()]
    learner = leap.Reptile(model)
    learner.init_task()
    learner.to(model)
    sgd_steps(model, batches(4), lr=0.3)
    learner.normalize()
    for p, p0, pk in zip(learner.parameters(), theta0, model.parameters()):
        torch.testing.assert_close(p.grad, p0 - pk.detach())


def test_fomaml_meta_gradient_is_the_gradient_of_the_last_inner_step():
    # The authors' code: the gradient "at final iteration", ∇f(θ_{K-1}) on the K-th batch.
    model = tiny()
    support = batches(4)
    learner = leap.FOMAML(model)
    learner.init_task()
    learner.to(model)
    expected = None
    for i, (x, y) in enumerate(support):
        model.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        learner.update(loss, model)
        if i == len(support) - 1:
            expected = [p.grad.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.3 * p.grad
    learner.end_task(model)
    learner.normalize()
    for p, e in zip(learner.parameters(), expected):
        torch.testing.assert_close(p.grad, e)


def test_fomaml_without_any_inner_step_is_an_error():
    model = tiny()
    learner = leap.FOMAML(model)
    learner.init_task()
    with pytest.raises(RuntimeError, match="no inner step"):
        learner.end_task(model)


def query_loss_after_adaptation(model, flat_theta0, support, query, lr):
    """f_query(θ_K(θ0)) computed with plain SGD from a flat θ0 (for finite differences)."""
    probe = tiny()
    torch.nn.utils.vector_to_parameters(flat_theta0, probe.parameters())
    sgd_steps(probe, support, lr)
    with torch.no_grad():
        return F.cross_entropy(probe(query[0]), query[1]).item()


def test_maml_meta_gradient_matches_finite_differences():
    model = tiny()
    support, query, lr = batches(3), batches(1, seed=7)[0], 0.5
    learner = leap.MAML(model, inner_lr=lr)
    learner.init_task()
    fast = learner.fast_params(model)
    for x, y in support:
        fast = learner.adapt(F.cross_entropy(learner.forward(model, fast, x), y), fast)
    learner.end_task(loss=F.cross_entropy(learner.forward(model, fast, query[0]), query[1]))
    learner.normalize()
    analytic = torch.cat([p.grad.flatten() for p in learner.parameters()])

    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    eps = 1e-6
    numeric = torch.zeros_like(flat)
    for i in range(len(flat)):
        e = torch.zeros_like(flat)
        e[i] = eps
        numeric[i] = (query_loss_after_adaptation(model, flat + e, support, query, lr)
                      - query_loss_after_adaptation(model, flat - e, support, query, lr)) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    # Second order matters here: the first-order gradient differs.
    fo = leap.MAML(model, inner_lr=lr, first_order=True)
    fo.init_task()
    fast = fo.fast_params(model)
    for x, y in support:
        fast = fo.adapt(F.cross_entropy(fo.forward(model, fast, x), y), fast)
    fo.end_task(loss=F.cross_entropy(fo.forward(model, fast, query[0]), query[1]))
    fo.normalize()
    first_order = torch.cat([p.grad.flatten() for p in fo.parameters()])
    assert not torch.allclose(first_order, numeric, rtol=1e-3, atol=1e-6)
