"""HAT (Serra et al. 2018) as the Multi-CV baseline: the annealed sigmoid, mask gating,
protection of other tasks' units, embedding-gradient compensation, the attention
regularizer, and non-sequential revisits."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from leap.baselines.hat import COSH_CLAMP, EMBEDDING_CLAMP, REG_STRENGTH, S_MAX, HATNet, annealed_scale

FILTERS = 8


def net_with_tasks(*classes: int) -> HATNet:
    net = HATNet(in_channels=3, image_size=32, filters=FILTERS)
    for c in classes:
        net.add_task(c)
    return net


def claim_units(net: HATNet, task: int, units: slice) -> None:
    """Make ``task``'s mask exactly binary: ``units`` on, all others off, in every layer."""
    with torch.no_grad():
        net.embeddings[task].fill_(-EMBEDDING_CLAMP)
        net.embeddings[task][:, units] = EMBEDDING_CLAMP
    net.mark_trained(task)


def batch(classes: int, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(classes, (n,), generator=g)


# ---------------------------------------------------------------------- annealed sigmoid
def test_annealed_scale_runs_linearly_from_one_over_s_max_to_s_max_within_an_epoch():
    values = [annealed_scale(b, 5, s_max=400.0) for b in range(5)]
    assert values[0] == pytest.approx(1 / 400)
    assert values[-1] == pytest.approx(400)
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert steps == pytest.approx([steps[0]] * 4)


def test_annealed_scale_of_a_single_batch_epoch_is_s_max():
    assert annealed_scale(0, 1) == S_MAX


def test_default_hyperparameters_are_serra_et_al_s():
    assert (S_MAX, REG_STRENGTH) == (400.0, 0.75)


# ---------------------------------------------------------------------- masks and gating
def test_mask_is_the_sigmoid_of_s_times_the_embedding():
    net = net_with_tasks(5)
    s = 3.0
    assert torch.allclose(net.masks(0, s), torch.sigmoid(s * net.embeddings[0]))
    assert net.masks(0, s).shape == (4, FILTERS)


def test_units_whose_mask_is_off_do_not_reach_the_head():
    net = net_with_tasks(5)
    claim_units(net, 0, slice(0, 0))  # every unit off
    x, _ = batch(5)
    logits = net(x, 0)
    assert torch.allclose(logits, net.heads[0].bias.expand_as(logits))


def test_forward_gives_each_task_its_own_head_size():
    net = net_with_tasks(5, 3)
    x, _ = batch(5)
    assert net(x, 0).shape == (6, 5) and net(x, 1).shape == (6, 3)


def test_evaluation_uses_s_max():
    net = net_with_tasks(5)
    x, _ = batch(5)
    assert torch.equal(net(x, 0), net(x, 0, S_MAX))


# ---------------------------------------------------------------------- protecting other tasks
def test_weights_between_units_another_task_uses_get_no_gradient():
    net = net_with_tasks(5, 3)
    claim_units(net, 0, slice(0, 4))  # task 0 owns units 0-3 of every layer
    x, y = batch(3)
    F.cross_entropy(net(x, 1, 1.0), y).backward()
    net.condition_gradients(1, 1.0)
    w = net.convs[1].weight.grad  # (out, in, 3, 3)
    assert w[:4, :4].abs().max() == 0  # used -> used: frozen
    assert w[4:].abs().max() > 0  # into free units: trainable
    assert w[:4, 4:].abs().max() > 0  # from free inputs into used units: min(1, 0) = 0, trainable
    assert net.convs[0].weight.grad[:4].abs().max() == 0  # layer 0: only the output unit counts
    for p in (net.convs[2].bias, net.norms[2].weight, net.norms[2].bias):
        assert p.grad[:4].abs().max() == 0 and p.grad[4:].abs().max() > 0


def test_training_another_task_leaves_a_trained_tasks_predictions_unchanged():
    net = net_with_tasks(5, 3)
    claim_units(net, 0, slice(0, 4))
    x0, _ = batch(5, seed=1)
    before = net(x0, 0).detach().clone()
    free_weights = net.convs[1].weight[4:].detach().clone()
    opt = torch.optim.SGD(net.parameters_for(1), lr=0.5)
    for step in range(5):
        x, y = batch(3, seed=10 + step)
        s = annealed_scale(step, 5)
        loss = F.cross_entropy(net(x, 1, s), y) + net.regularizer(1, s)
        opt.zero_grad()
        loss.backward()
        net.condition_gradients(1, s)
        opt.step()
        net.after_step(1)
    assert not torch.equal(net.convs[1].weight[4:], free_weights)  # task 1 did learn, in its own units
    assert torch.allclose(net(x0, 0), before, atol=1e-6)


def test_other_masks_are_the_unit_wise_max_over_trained_tasks_only():
    net = net_with_tasks(5, 5, 5, 5)
    claim_units(net, 0, slice(0, 2))
    claim_units(net, 1, slice(2, 4))
    # task 2 was never trained: its random mask must not protect anything
    prev = net.other_masks(3)
    assert torch.equal(prev[:, :4], torch.ones(4, 4)) and torch.equal(prev[:, 4:], torch.zeros(4, FILTERS - 4))


def test_a_revisited_task_is_not_protected_from_itself():
    net = net_with_tasks(5, 5)
    claim_units(net, 0, slice(0, 4))
    assert net.other_masks(0).abs().max() == 0  # only task 0 was trained
    x, y = batch(5)
    F.cross_entropy(net(x, 0), y).backward()
    net.condition_gradients(0, S_MAX)
    assert net.convs[1].weight.grad[:4, :4].abs().max() > 0


# ---------------------------------------------------------------------- embedding training
def test_embedding_gradient_is_compensated_for_the_annealed_scale():
    net = net_with_tasks(5)
    s = 2.0
    with torch.no_grad():
        net.embeddings[0].copy_(torch.linspace(-3, 3, 4 * FILTERS).view(4, FILTERS))
    e = net.embeddings[0].detach().clone()
    net.embeddings[0].grad = torch.ones_like(e)
    net.condition_gradients(0, s)
    expected = S_MAX / s * (torch.cosh((s * e).clamp(-COSH_CLAMP, COSH_CLAMP)) + 1) / (torch.cosh(e) + 1)
    assert torch.allclose(net.embeddings[0].grad, expected)


def test_embedding_is_clamped_after_each_step():
    net = net_with_tasks(5)
    with torch.no_grad():
        net.embeddings[0].mul_(100)
    net.after_step(0)
    assert net.embeddings[0].abs().max() <= EMBEDDING_CLAMP


def test_regularizer_without_other_tasks_is_c_times_the_mean_mask():
    net = net_with_tasks(5)
    s = 1.5
    assert net.regularizer(0, s).item() == pytest.approx(REG_STRENGTH * net.masks(0, s).mean().item(), rel=1e-5)


def test_regularizer_counts_only_units_other_tasks_left_free():
    net = net_with_tasks(5, 5)
    claim_units(net, 0, slice(0, 4))
    with torch.no_grad():
        net.embeddings[1].fill_(EMBEDDING_CLAMP)  # task 1 wants every unit
    # it claims all 4 free units per layer: (4 x 4) / (4 x 4) = 1
    assert net.regularizer(1, S_MAX).item() == pytest.approx(REG_STRENGTH)
    assert math.isfinite(net.regularizer(0, S_MAX).item())
