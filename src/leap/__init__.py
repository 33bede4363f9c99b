"""leap: meta-learning initializations that shorten learning processes.

Reference implementation of "Transferring Knowledge across Learning Processes"
(Flennerhag, Moreno, Lawrence, Damianou, ICLR 2019).

The meta-learners are imported when first used (``leap.Leap``), so that ``import leap``
alone, and ``leap --version``, do not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from leap.util.version import VERSION as __version__

if TYPE_CHECKING:
    from leap.learners import FOMAML, MAML, Leap, MetaLearner, Reptile

__all__ = ["FOMAML", "MAML", "Leap", "MetaLearner", "Reptile", "__version__"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import leap.learners

        return getattr(leap.learners, name)
    raise AttributeError(f"module 'leap' has no attribute {name!r}")
