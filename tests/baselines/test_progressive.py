"""Progressive Nets (Rusu et al. 2016) as the Multi-CV baseline: columns with lateral
adapters from every other column, frozen columns while one trains, and a held-out
column that reads all the pretraining columns without changing them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leap.baselines.progressive import ALPHA_INIT, LateralAdapter, ProgressiveNet
from leap.models import ConvNet

FILTERS = 8


def pool(*classes: int) -> ProgressiveNet:
    return ProgressiveNet.fully_connected(list(classes), in_channels=3, image_size=32, filters=FILTERS)


def batch(classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 32, 32, generator=g), torch.randint(classes, (4,), generator=g)


def train_column(net: ProgressiveNet, task: int, classes: int, steps: int = 3) -> None:
    net.freeze_except(task)
    opt = torch.optim.SGD(net.column_parameters(task), lr=0.1)
    for step in range(steps):
        x, y = batch(classes, seed=step)
        opt.zero_grad()
        F.cross_entropy(net(x, task), y).backward()
        opt.step()


def test_pretraining_columns_each_read_every_other_column():
    net = pool(5, 3, 4)
    assert [c.sources for c in net.columns] == [[1, 2], [0, 2], [0, 1]]


def test_an_added_column_reads_all_existing_columns_and_none_reads_it():
    net = pool(5, 3)
    k = net.add_column(2)
    assert net.columns[k].sources == [0, 1]
    assert all(k not in c.sources for c in net.columns[:k])


def test_each_column_answers_with_its_own_number_of_classes():
    net = pool(5, 3)
    x, _ = batch(5)
    assert net(x, 0).shape == (4, 5) and net(x, 1).shape == (4, 3)


def test_laterals_connect_layers_1_to_3_with_one_alpha_per_source():
    net = pool(5, 3, 4)
    column = net.columns[0]
    assert len(column.laterals) == 3  # layer 0 reads the shared image
    assert all(torch.equal(a.alpha, torch.full((2,), ALPHA_INIT)) for a in column.laterals)


def test_lateral_adapter_maps_concatenated_sources_to_one_columns_width():
    adapter = LateralAdapter(num_sources=3, channels=FILTERS)
    out = adapter([torch.randn(2, FILTERS, 8, 8) for _ in range(3)])
    assert out.shape == (2, FILTERS, 8, 8)
    with pytest.raises(ValueError, match="expected 3 source"):
        adapter([torch.randn(2, FILTERS, 8, 8)])


def test_lateral_connections_change_a_columns_output():
    net = pool(5, 3)
    x, _ = batch(5)
    before = net(x, 0).detach()
    with torch.no_grad():
        net.columns[0].laterals[1].alpha.fill_(5.0)
    assert not torch.allclose(net(x, 0), before)


def test_frozen_columns_get_no_gradient_and_do_not_move():
    net = pool(5, 3, 4)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    train_column(net, 1, 3)
    for name, p in net.named_parameters():
        if name.startswith("columns.1."):
            continue
        assert p.grad is None, name
        assert torch.equal(p, before[name]), name
    assert any(not torch.equal(p, before[n]) for n, p in net.named_parameters() if n.startswith("columns.1."))


def test_the_trained_columns_adapters_learn():
    net = pool(5, 3)
    train_column(net, 0, 5, steps=1)
    assert all(a.alpha.grad is not None and a.alpha.grad.abs().sum() > 0 for a in net.columns[0].laterals)


def test_training_the_held_out_column_leaves_pretraining_columns_outputs_unchanged():
    net = pool(5, 3)
    x, _ = batch(5, seed=7)
    outputs = [net(x, k).detach().clone() for k in range(2)]
    k = net.add_column(2)
    train_column(net, k, 2)
    assert all(torch.equal(net(x, j), outputs[j]) for j in range(2))


def test_a_column_is_at_least_as_large_as_the_plain_encoder():
    net = pool(10, 10, 10)
    plain = sum(p.numel() for p in ConvNet(3, 10, 32, filters=FILTERS).parameters())
    column = sum(p.numel() for p in net.columns[0].parameters())
    assert column > plain
    assert sum(p.numel() for p in net.parameters()) > 3 * plain
