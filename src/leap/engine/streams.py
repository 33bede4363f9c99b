"""The batched engine's data: every minibatch of a chunk of tasks drawn up front.

Each task's generator is consumed exactly as ``Task.sample`` would consume it (indices,
then the augmentation's draw), so the batched and sequential loops see the same data; an
augmentation that splits its randomness from its application
([`leap.tasks.base.SplitAugment`][leap.tasks.base.SplitAugment]) is applied to every image of every step and task in
one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from leap.tasks.base import SplitAugment, Task

#: A task and the generator of its visit.
TaskDraw = tuple[Task, torch.Generator]


@dataclass
class Stream:
    """Every minibatch of a chunk of T tasks: ``x`` (S, T, B, *input), ``y`` (S, T, B) for
    the S = K (+1 with Leap's final training batch) training draws."""

    x: Tensor
    y: Tensor


def draw_stream(tasks: Sequence[TaskDraw], draws: int, batch: int, device: torch.device) -> Stream:
    """Consume each task's generator as ``draws`` calls of ``Task.sample`` would, and build
    the batches on ``device``."""
    kinds = {t.augment for t, _ in tasks}
    augment = next(iter(kinds))
    split = len(kinds) == 1 and isinstance(augment, SplitAugment)
    if kinds != {None} and not split:
        return _draw_stream_per_task(tasks, draws, batch)
    index, uniforms = [], []
    for task, gen in tasks:
        idx, u = [], []
        for _ in range(draws):  # the order of Task.sample: indices, then the augmentation's draw
            idx.append(task.draw_index(batch, gen))
            if split:
                u.append(augment.draw(batch, gen))
        index.append(torch.stack(idx))
        if split:
            uniforms.append(torch.stack(u))
    # Tasks may differ in size: one pool per chunk, each task's indices shifted to its rows.
    gidx = _to_device(_shift(torch.stack(index, 1), [len(t.train_y) for t, _ in tasks], dim=1), device)  # (S, T, B)
    x = torch.cat([t.train_x for t, _ in tasks])[gidx]  # (S, T, B, *input)
    y = torch.cat([t.train_y for t, _ in tasks])[gidx]
    if split:  # every image of every step and task in one call (Omniglot: one affine_grid / grid_sample)
        u = _to_device(torch.stack(uniforms, 1), device).flatten(0, 2)  # (S*T*B, P)
        x = augment.apply(x.flatten(0, 2), u).view_as(x)
    return Stream(x, y)


def _draw_stream_per_task(tasks: Sequence[TaskDraw], draws: int, batch: int) -> Stream:
    """Fallback for an augmentation the engine cannot batch: ``Task.sample`` itself."""
    xs, ys = [], []
    for task, gen in tasks:
        samples = [task.sample(batch, gen) for _ in range(draws)]
        xs.append(torch.stack([s[0] for s in samples]))
        ys.append(torch.stack([s[1] for s in samples]))
    return Stream(torch.stack(xs, 1), torch.stack(ys, 1))


def _shift(index: Tensor, sizes: list[int], dim: int) -> Tensor:
    """Task j's indices (along ``dim``) plus the rows of tasks 0..j-1: indices into the
    concatenation of the tasks' sets."""
    starts = torch.tensor([0, *sizes[:-1]], device=index.device).cumsum(0)
    return index + starts.view(-1, *([1] * (index.dim() - dim - 1)))


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """One host-to-device copy that does not wait for the device (pinned source)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
