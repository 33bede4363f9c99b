"""Progressive Neural Networks (Rusu et al. 2016), non-sequential.

One column per task: a copy of the Multi-CV encoder (4 x [conv 3x3, max-pool,
batch-norm, ReLU]) with its own linear head. Column k's layer l (l >= 1) also reads the
layer l-1 activations of its *source* columns through a lateral adapter (Rusu et al.'s
eq. 2, with 1x1 convolutions as their convolutional variant):

    z_k^l = W_k^l * h_k^{l-1} + U_k^l relu(V_k^l [alpha_1 h_1^{l-1}, ..., alpha_m h_m^{l-1}])
    h_k^l = relu(batchnorm(maxpool(z_k^l)))

where [...] concatenates the m source columns along channels, V reduces them to one
column's width, U maps that into layer l, and each source has a learned scale alpha
(initialized to 0.1, one of Rusu et al.'s choices). Layer 0 reads the image, which
every column shares, so it has no lateral connections.

Non-sequential (Leap appendix E): in pretraining every column reads every *other*
pretraining column, and tasks are revisited until convergence. All columns are
computed layer by layer, so the graph has no cycles even though each column reads the
others. Training task k updates only column k (its layers, adapters and head); all
other columns are frozen, and their activations enter column k's adapters as constants
(detached), as the frozen columns of the sequential original are. A column added later
(the held-out task) reads all existing columns, and no existing column reads it, so
their function never changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leap.baselines.layers import conv_stack

ALPHA_INIT = 0.1


class LateralAdapter(nn.Module):
    """U relu(V [alpha_j h_j]_j): (B, m F, H, W) of m sources -> (B, F, H, W)."""

    def __init__(self, num_sources: int, channels: int, alpha_init: float = ALPHA_INIT) -> None:
        super().__init__()
        if num_sources < 1:
            raise ValueError(f"a lateral adapter needs at least one source column, got {num_sources}")
        self.alpha = nn.Parameter(torch.full((num_sources,), float(alpha_init)))
        self.reduce = nn.Conv2d(num_sources * channels, channels, 1)  # V
        self.project = nn.Conv2d(channels, channels, 1, bias=False)  # U

    def forward(self, sources: Sequence[Tensor]) -> Tensor:
        if len(sources) != len(self.alpha):
            raise ValueError(f"expected {len(self.alpha)} source activations, got {len(sources)}")
        scaled = torch.cat([a * h for a, h in zip(self.alpha, sources)], dim=1)
        return self.project(F.relu(self.reduce(scaled)))


class Column(nn.Module):
    """One task's column: the encoder's layers, adapters for layers 1.., and a head."""

    def __init__(self, in_channels: int, image_size: int, filters: int, layers: int, num_classes: int,
                 sources: Sequence[int]) -> None:
        super().__init__()
        self.convs, self.norms, feature_dim = conv_stack(in_channels, image_size, filters, layers)
        self.sources = list(sources)
        self.laterals = nn.ModuleList(
            [LateralAdapter(len(self.sources), filters) for _ in range(layers - 1)] if self.sources else []
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def layer(self, index: int, own: Tensor, sources: Sequence[Tensor]) -> Tensor:
        """Layer ``index`` of this column from its own and its sources' previous activations."""
        z = self.convs[index](own)
        if index > 0 and self.sources:
            # Source columns are frozen while this one trains, and no column is its own
            # source: their activations are constants here. Detaching them also stops
            # gradients from looping back into this column through columns that read it.
            z = z + self.laterals[index - 1]([h.detach() for h in sources])
        return F.relu(self.norms[index](F.max_pool2d(z, 2)))


class ProgressiveNet(nn.Module):
    """Columns with lateral connections; ``forward(x, task)``: (B, C, H, W) -> (B, classes of ``task``)."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, filters: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.filters, self.num_layers = in_channels, image_size, filters, layers
        self.columns = nn.ModuleList()

    @classmethod
    def fully_connected(cls, num_classes: Sequence[int], **kwargs: int) -> ProgressiveNet:
        """One column per entry of ``num_classes``, each reading every other column."""
        net = cls(**kwargs)
        n = len(num_classes)
        for k, classes in enumerate(num_classes):
            net._append(classes, [j for j in range(n) if j != k])
        return net

    @property
    def num_tasks(self) -> int:
        return len(self.columns)

    def add_column(self, num_classes: int) -> int:
        """A new column reading every existing column (none reads it); returns its index."""
        device = next(self.parameters()).device if len(self.columns) else torch.device("cpu")
        return self._append(num_classes, list(range(self.num_tasks)), device)

    def _append(self, num_classes: int, sources: list[int], device: torch.device | None = None) -> int:
        column = Column(self.in_channels, self.image_size, self.filters, self.num_layers, num_classes, sources)
        self.columns.append(column.to(device) if device is not None else column)
        return self.num_tasks - 1

    def forward(self, x: Tensor, task: int) -> Tensor:
        needed = self._needed(task)
        h = {k: self.columns[k].layer(0, x, []) for k in needed[0]}  # layer 0 reads the shared image
        for layer in range(1, self.num_layers):
            h = {k: self.columns[k].layer(layer, h[k], [h[j] for j in self.columns[k].sources])
                 for k in needed[layer]}
        return self.columns[task].head(h[task].flatten(1))

    def _needed(self, task: int) -> list[set[int]]:
        """Columns to compute at each layer: the task's column at the last layer, plus,
        going down, the sources of every column computed one layer up."""
        needed: list[set[int]] = [set() for _ in range(self.num_layers)]
        needed[-1] = {task}
        for layer in range(self.num_layers - 1, 0, -1):
            needed[layer - 1] = set(needed[layer])
            for k in needed[layer]:
                needed[layer - 1].update(self.columns[k].sources)
        return needed

    def column_parameters(self, task: int) -> list[nn.Parameter]:
        """What training ``task`` optimizes: its column (layers, adapters, head) only."""
        return list(self.columns[task].parameters())

    def freeze_except(self, task: int) -> None:
        """requires_grad only on column ``task``: the others get no gradient (and cost no
        weight-gradient computation) while it trains."""
        for k, column in enumerate(self.columns):
            column.requires_grad_(k == task)


__all__ = ["Column", "LateralAdapter", "ProgressiveNet"]
