"""Omniglot's constants: the official release, the protocol options and appendix D's ranges."""

from __future__ import annotations

from pathlib import Path

PARTS = ("images_background", "images_evaluation")
SOURCE_SIZE = 105  # side of the official PNGs
IMAGE_SIZE = 28  # side after downsampling (appendix D)
DRAWINGS = 20  # drawings per character in the official release
TEST_DRAWINGS = 5  # held out per character: the last five in file order
NUM_CLASSES = 20
ENV_VAR = "LEAP_OMNIGLOT_DIR"
# (alphabets, characters, images) of the official release, to flag a partial dataset.
OFFICIAL_COUNTS = {"images_background": (30, 964, 19280), "images_evaluation": (20, 659, 13180)}
#: Image pipelines (module docstring): the authors' code's, and Lanczos with inversion.
PIPELINES = ("released", "smooth")
#: How test images are classified: batch norm with the task's running statistics, or
#: with the test batch's own statistics (transductive).
BN_EVAL = ("running", "batch")
# Bump when a decoded representation changes, so stale caches are not reused.
CACHE_FORMAT = {"released": "omniglot-v2-nearest28", "smooth": "omniglot-v1-lanczos28-inverted"}

# Augmentation ranges of appendix D.
ROTATION_DEGREES = 360.0
MAX_TRANSLATION = 0.2
SCALE_RANGE = (0.8, 1.2)


def _how_to(directory: Path | str) -> str:
    return (f"put images_background.zip and images_evaluation.zip (official Omniglot archives), "
            f"or their extracted folders, in {directory}")


class OmniglotSizeWarning(UserWarning):
    """The data holds fewer (or more) alphabets, characters or images than the official release."""
