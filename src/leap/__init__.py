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
    from leap.util.files import load_init, save_init

__all__ = ["FOMAML", "MAML", "Leap", "MetaLearner", "Reptile", "__version__", "load_init", "save_init"]
#: Where each lazily imported name lives.
_HOMES = {"FOMAML": "leap.learners", "MAML": "leap.learners", "Leap": "leap.learners",
          "MetaLearner": "leap.learners", "Reptile": "leap.learners", "load_init": "leap.util.files",
          "save_init": "leap.util.files"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'leap' has no attribute {name!r}")
