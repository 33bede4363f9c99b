"""Omniglot as a task family: one 20-way classification task per alphabet (appendix D).

Data. The two official archives ``images_background.zip`` and ``images_evaluation.zip``
(``images_background/<Alphabet>/characterNN/XXXX_YY.png``, 105 x 105 1-bit PNGs), or
their extracted folders, in a directory the user names (also accepted one level down in
``omniglot-py/``, torchvision's layout). Every PNG is decoded once, downsampled to 28 x 28
and cached as one uint8 ``.npz`` keyed by the pipeline and the source files' names, sizes
and modification times; later constructions read the cache in well under a second. All
images then live in memory as one uint8 tensor (N, 1, 28, 28) on the benchmark's device
and a task is a gather from it.

Pipelines (the paper does not say; ``pipeline=``, ``--pipeline``):

- ``"released"`` (default), as the authors' code: the 1-bit image is resized with nearest
  neighbour (what Pillow does for 1-bit images), black strokes on white (not inverted),
  the augmentation samples with nearest neighbour and fills with 0, and batch-norm
  scales start from U(0, 1) (PyTorch 0.4's default).
- ``"smooth"``: Lanczos resize, inverted (strokes 1, background 0), bilinear
  augmentation with zero (background) fill, batch-norm scales 1.

Protocol (appendix D). The 50 alphabets of both archives are merged; alphabets with
fewer than 20 characters cannot form a 20-way task and are dropped (4 of 50, leaving
46). A shuffle of the kept alphabets, seeded by the benchmark's ``seed``, assigns the
first ``num_pretrain`` (25) to the pretraining pool (split ``"train"``; a run uses the
first N of them), the next ``num_test`` (10) to the held-out test tasks (``"test"``) and
the rest (11) to validation (``"val"``).

A task is one alphabet with 20 of its characters in a label order (labels 0..19), both
drawn once from ``(task_seed, split, alphabet)`` and kept for every visit, as in the
authors' code: a run meets the same 20-way problem each time it draws the alphabet, so
a head kept for an alphabet (multi-headed finetuning) always matches its labels. The
run's seed fixes the pretraining tasks, the evaluation seed the held-out ones. Each
character has 20 drawings, by 20 different people (the ``_YY`` in the file name); the
drawings ``_16`` to ``_20`` (the last five in file order) are the task's test set and
the other fifteen its training set. Fixing the held-out drawings per character, rather
than drawing them per task, means no test image is ever trained on in another draw of
the same alphabet.

Augmentation (appendix D). Every image, training and test alike, goes through a random
affine map: rotation uniform in [0, 360) degrees, translation uniform in [-0.2, 0.2] of
the width and height, scale uniform in [0.8, 1.2]. Training minibatches are augmented
afresh at every draw (``Task.augment``); a task's test set is augmented once per visit,
from that visit's generator, so evaluation is deterministic given the seed.

Evaluation (``bn_eval=``, ``--bn-eval``): ``"running"`` (default, the authors' code)
builds batch norm with running statistics, reset for every task, and classifies test
images in eval mode with the statistics of that task's training, so a prediction does not
depend on the other test images; ``"batch"`` normalizes with the statistics of the test
images themselves (transductive).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leap.tasks.omniglot.constants import (
    BN_EVAL,
    CACHE_FORMAT,
    DRAWINGS,
    ENV_VAR,
    IMAGE_SIZE,
    MAX_TRANSLATION,
    NUM_CLASSES,
    OFFICIAL_COUNTS,
    PARTS,
    PIPELINES,
    ROTATION_DEGREES,
    SCALE_RANGE,
    SOURCE_SIZE,
    TEST_DRAWINGS,
    OmniglotSizeWarning,
)
from leap.tasks.omniglot.download import ARCHIVES, OFFICIAL_URL, download_omniglot
from leap.util.lazy import lazy_attributes

if TYPE_CHECKING:
    from leap.tasks.omniglot.augment import (
        AUGMENTATION,
        AffineParams,
        RandomAffine,
        affine_params_from_uniforms,
        affine_theta,
        apply_affine,
        draw_affine_uniforms,
        random_affine,
        sample_affine_params,
    )
    from leap.tasks.omniglot.benchmark import OmniglotBenchmark
    from leap.tasks.omniglot.data import (
        OmniglotData,
        Tree,
        decode_sources,
        find_sources,
        load_omniglot,
        resolve_data_dir,
    )

# The modules that need torch and numpy are imported when one of their names is first
# used, so that the constants (the command line's choices) come without them.
_LAZY = {
    "leap.tasks.omniglot.augment": (
        "AUGMENTATION", "AffineParams", "RandomAffine", "affine_params_from_uniforms", "affine_theta", "apply_affine",
        "draw_affine_uniforms", "random_affine", "sample_affine_params",
    ),
    "leap.tasks.omniglot.benchmark": ("OmniglotBenchmark",),
    "leap.tasks.omniglot.data": (
        "OmniglotData", "Tree", "decode_sources", "find_sources", "load_omniglot", "resolve_data_dir",
    ),
}

__all__ = [
    "ARCHIVES",
    "AUGMENTATION",
    "BN_EVAL",
    "CACHE_FORMAT",
    "DRAWINGS",
    "ENV_VAR",
    "IMAGE_SIZE",
    "MAX_TRANSLATION",
    "NUM_CLASSES",
    "OFFICIAL_COUNTS",
    "OFFICIAL_URL",
    "PARTS",
    "PIPELINES",
    "ROTATION_DEGREES",
    "SCALE_RANGE",
    "SOURCE_SIZE",
    "TEST_DRAWINGS",
    "AffineParams",
    "OmniglotBenchmark",
    "OmniglotData",
    "OmniglotSizeWarning",
    "RandomAffine",
    "Tree",
    "affine_params_from_uniforms",
    "affine_theta",
    "apply_affine",
    "decode_sources",
    "download_omniglot",
    "draw_affine_uniforms",
    "find_sources",
    "load_omniglot",
    "random_affine",
    "resolve_data_dir",
    "sample_affine_params",
]
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
