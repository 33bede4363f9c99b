"""Meta-learners behind one hook interface (see [`leap.learners.base`][leap.learners.base])."""

from leap.learners.base import MetaLearner, select_parameters
from leap.learners.leap import Leap
from leap.learners.maml import FOMAML, MAML
from leap.learners.reptile import Reptile

__all__ = ["FOMAML", "MAML", "Leap", "MetaLearner", "Reptile", "select_parameters"]
