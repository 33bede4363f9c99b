"""The methods of Table 2, one object each, in one registry.

Everything that differs between methods is said here and nowhere else: how a method's
hook is built, whether it meta-trains at all, whether it carries one model from task to
task (multi-headed finetuning), whether it differentiates through the inner loop (MAML),
whether the batched engine can run its meta-training, and whether its initialization is
evaluated with a fresh head. Code elsewhere asks the method, never tests its name.

A hook's learner class is imported when the hook is built: the registry itself (the
command line's ``--method`` choices) comes without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from torch import nn

    from leap.learners import MetaLearner
    from leap.learners.base import ParamSelector


class LearnerOptions(Protocol):
    """The run options a hook is built from (a [`RunConfig`][leap.experiments.config.RunConfig])."""

    metric: str
    loss_in_manifold: bool
    stabilizer: bool
    inner_lr: float


LearnerFactory = Callable[["nn.Module", LearnerOptions, "ParamSelector"], "MetaLearner"]


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # its name in tables and figures
    meta_lr: float  # Table 3's meta learning rate (0: no meta-optimizer)
    #: The hook (θ0 and its meta-gradient), or None: finetuning and no pretraining have none.
    make_learner: LearnerFactory | None = None
    #: False: nothing to meta-train; the initialization is the model as built.
    meta_trains: bool = True
    #: Multi-headed finetuning: one encoder carried from meta-step to meta-step with one head
    #: per pretraining source; it cannot be split over processes or batched.
    carries_model: bool = False
    #: MAML: meta-training differentiates through ``maml_steps`` inner steps.
    differentiates_inner_loop: bool = False
    #: The batched engine can run its meta-training (its evaluation always can).
    batched: bool = True
    #: Its initialization is evaluated with a freshly initialized head.
    fresh_head: bool = False

    def learner(self, model: nn.Module, options: LearnerOptions, params: ParamSelector = None) -> MetaLearner | None:
        """This method's hook on ``model`` (on the ``params`` subset), or None."""
        return None if self.make_learner is None else self.make_learner(model, options, params)

    @property
    def has_learner(self) -> bool:
        return self.make_learner is not None


def _leap(model: nn.Module, o: LearnerOptions, params: ParamSelector) -> MetaLearner:
    from leap.learners import Leap

    return Leap(model, metric=o.metric, loss_in_manifold=o.loss_in_manifold, stabilizer=o.stabilizer, params=params)


def _reptile(model: nn.Module, o: LearnerOptions, params: ParamSelector) -> MetaLearner:
    from leap.learners import Reptile

    return Reptile(model, params=params)


def _fomaml(model: nn.Module, o: LearnerOptions, params: ParamSelector) -> MetaLearner:
    from leap.learners import FOMAML

    return FOMAML(model, params=params)


def _maml(model: nn.Module, o: LearnerOptions, params: ParamSelector) -> MetaLearner:
    from leap.learners import MAML

    return MAML(model, inner_lr=o.inner_lr, params=params)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("leap", "Leap", 0.1, _leap),
        Method("reptile", "Reptile", 0.1, _reptile),
        Method("fomaml", "FOMAML", 0.5, _fomaml),
        Method("maml", "MAML", 0.5, _maml, differentiates_inner_loop=True, batched=False),
        Method("finetune", "Finetuning (multi-headed)", 0.0, carries_model=True, batched=False, fresh_head=True),
        Method("none", "No pretraining", 0.0, meta_trains=False, batched=False),
    )
}
