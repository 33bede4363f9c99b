"""The hook API: the calls of the official Leap package, fixed for PyTorch 2.x."""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import leap
from leap.models import MLP


def run_meta_step(model, learner, meta_opt, tasks=2, steps=3, set_to_none=True):
    g = torch.Generator().manual_seed(0)
    for _ in range(tasks):
        learner.init_task()
        learner.to(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(steps):
            x, y = torch.randn(8, 5, generator=g), torch.randint(3, (8,), generator=g)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            learner.update(loss, model)
            opt.step()
            opt.zero_grad()
    learner.normalize()
    meta_opt.step()
    meta_opt.zero_grad(set_to_none=set_to_none)


@pytest.mark.parametrize("cls", [leap.Leap, leap.Reptile])
def test_meta_optimizer_zero_grad_set_to_none_is_supported(cls):
    model = MLP(5, 3, hidden=8)
    learner = cls(model)
    meta_opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    before = [p.detach().clone() for p in learner.parameters()]
    for _ in range(3):
        run_meta_step(model, learner, meta_opt, set_to_none=True)
        assert all(p.grad is None for p in learner.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.parameters()))


def test_subset_of_parameters_leaves_the_rest_alone():
    model = MLP(5, 3, hidden=8)
    learner = leap.Leap(model, params=lambda name, p: name.startswith("encoder"))
    assert learner.param_names == ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias"]
    with torch.no_grad():
        model.head.weight.fill_(7.0)
    learner.to(model)
    assert torch.all(model.head.weight == 7.0)  # to() loads θ0 only into the subset
    meta_opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    theta0_before = [p.detach().clone() for p in learner.parameters()]
    run_meta_step(model, learner, meta_opt)
    assert all(p.grad is None for p in learner.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(theta0_before, learner.parameters()))  # θ0 moved
    # The head is the task's: the meta-step and the next task's to() leave it where training left it.
    head_after_training = model.head.weight.detach().clone()
    assert not torch.all(head_after_training == 7.0)  # the inner loop did train it
    learner.to(model)
    assert torch.equal(model.head.weight, head_after_training)
    theta0 = dict(learner.named_parameters())
    assert all(torch.equal(p, theta0[name]) for name, p in model.named_parameters() if name.startswith("encoder"))


def test_parameter_names_select_a_subset_and_unknown_names_are_rejected():
    model = MLP(5, 3, hidden=8)
    learner = leap.Leap(model, params=["head.weight"])
    assert [tuple(p.shape) for p in learner.parameters()] == [(3, 8)]
    with pytest.raises(ValueError, match="unknown parameter name"):
        leap.Leap(model, params=["head.nope"])
    with pytest.raises(ValueError, match="selects no parameter"):
        leap.Leap(model, params=lambda n, p: False)
    with pytest.raises(TypeError, match="params must be"):
        leap.Leap(model, params=3)


def test_invalid_options_name_the_argument():
    model = MLP(5, 3, hidden=8)
    with pytest.raises(ValueError, match="metric"):
        leap.Leap(model, metric="area")
    with pytest.raises(TypeError, match="model"):
        leap.Leap("not a model")
    with pytest.raises(RuntimeError, match="init_task"):
        leap.Leap(model).update(torch.tensor(1.0), model)


def test_no_autograd_graph_is_retained():
    model = MLP(5, 3, hidden=8)
    learner = leap.Leap(model)
    learner.init_task()
    learner.to(model)
    x, y = torch.randn(8, 5), torch.randint(3, (8,))
    hidden = model.encoder(x)
    loss = F.cross_entropy(model.head(hidden), y)
    loss.backward()
    learner.update(loss, model)
    ref = weakref.ref(hidden)  # saved by the graph for the head's backward
    del loss, hidden
    gc.collect()
    assert ref() is None  # the hook kept no reference into the graph
    state = [*learner._prev.views, *learner._prev_grads.views, *learner._task_acc]
    assert isinstance(learner._prev_loss, float)  # on a CPU f(θ_i) is kept as a Python number
    assert all(t.grad_fn is None and not t.requires_grad for t in state)
    learner.normalize()
    assert all(p.grad.grad_fn is None for p in learner.parameters())


def test_to_resets_buffers_to_their_initial_values():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    learner = leap.Leap(model)
    model(torch.randn(16, 3))  # training mode: running stats move
    assert not torch.all(model[1].running_mean == 0)
    learner.to(model)
    assert torch.all(model[1].running_mean == 0)


def test_state_dict_round_trip_restores_init_and_accumulator():
    model = MLP(5, 3, hidden=8)
    learner = leap.Leap(model)
    run_meta_step(model, learner, torch.optim.SGD(learner.parameters(), lr=0.1))
    learner.init_task()
    learner.to(model)
    x, y = torch.randn(8, 5), torch.randint(3, (8,))
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        learner.update(loss, model)
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    learner.end_task(model, F.cross_entropy(model(x), y))
    state = learner.state_dict()
    other = leap.Leap(MLP(5, 3, hidden=8))
    other.load_state_dict(state)
    other.normalize()
    learner.normalize()
    for a, b in zip(learner.parameters(), other.parameters()):
        assert torch.equal(a, b) and torch.equal(a.grad, b.grad)


def test_non_finite_task_is_dropped_from_the_mean():
    model = MLP(5, 3, hidden=8)
    learner = leap.Reptile(model)
    learner.init_task()
    learner.to(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    learner.init_task()
    learner.to(model)
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    valid = learner.normalize()
    assert int(valid) == 1
    for p in learner.parameters():
        torch.testing.assert_close(p.grad, torch.full_like(p, -1.0))


# ---------------------------------------------------------------------- a strict hook
def test_maml_through_the_plain_hook_calls_is_refused_naming_what_to_call():
    model = MLP(5, 3, hidden=8)
    learner = leap.MAML(model)
    learner.init_task()
    loss = F.cross_entropy(model(torch.randn(4, 5)), torch.randint(3, (4,)))
    loss.backward()
    with pytest.raises(RuntimeError, match=r"fast_params\(model\).*adapt\(loss, fast\).*end_task\(loss=query_loss\)"):
        learner.update(loss, model)


def test_a_learner_built_on_a_compiled_model_and_used_with_either_form_works():
    model = MLP(5, 3, hidden=8)
    compiled = torch.compile(model)  # not run: only its wrapper's parameter names matter here
    learner = leap.Leap(compiled)
    assert learner.param_names == [n for n, _ in model.named_parameters()]  # no "_orig_mod." prefix
    assert learner.params_of(model)[0] is next(model.parameters())
    assert leap.Leap(model).to(compiled) is compiled


def test_casting_or_moving_the_model_after_building_the_learner_is_detected():
    model = MLP(5, 3, hidden=8)
    learner = leap.Leap(model)
    learner.to(model)
    model.double()
    with pytest.raises(ValueError, match=r"model has torch.float64.*learner has torch.float32.*after moving"):
        learner.to(model)


def test_state_dict_carries_the_hyperparameters_and_loading_is_strict():
    model = MLP(5, 3, hidden=8)
    energy = leap.Leap(model, metric="energy").state_dict()
    assert energy["hyperparameters"]["metric"] == "energy"
    with pytest.raises(ValueError, match=r"another learner \(hyperparameters differ in \['metric'\]\)"):
        leap.Leap(model, metric="length").load_state_dict(energy)
    with pytest.raises(ValueError, match="unexpected key"):
        leap.Leap(model, metric="energy").load_state_dict({**energy, "surprise": torch.zeros(1)})
    leap.Leap(model, metric="length").load_state_dict(energy, strict=False)  # on request
    leap.Leap(model, metric="energy").load_state_dict(energy)


def test_update_without_gradients_warns_once():
    model = MLP(5, 3, hidden=8)
    learner = leap.Leap(model)
    learner.init_task()
    loss = F.cross_entropy(model(torch.randn(4, 5)), torch.randint(3, (4,)))
    with pytest.warns(UserWarning, match=r"found no gradients: call loss.backward\(\) before update\(\)"):
        learner.update(loss, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner.update(loss, model)  # once only
