"""Continual-learning baselines of the Multi-CV experiment (section 4.2, appendix E).

Both are non-sequential: any task may be revisited, in any order, until convergence.

- `leap.baselines.hat`: Hard Attention to the Task (Serra et al. 2018).
- `leap.baselines.progressive`: Progressive Neural Networks (Rusu et al. 2016).
"""

from leap.baselines.hat import HATNet, annealed_scale
from leap.baselines.progressive import LateralAdapter, ProgressiveNet

__all__ = ["HATNet", "LateralAdapter", "ProgressiveNet", "annealed_scale"]
