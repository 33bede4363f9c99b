"""leap: meta-learning initializations that shorten learning processes.

Reference implementation of "Transferring Knowledge across Learning Processes"
(Flennerhag, Moreno, Lawrence, Damianou, ICLR 2019).
"""

from leap.learners import FOMAML, MAML, Leap, MetaLearner, Reptile
from leap.util.version import VERSION as __version__

__all__ = ["FOMAML", "MAML", "Leap", "MetaLearner", "Reptile", "__version__"]
