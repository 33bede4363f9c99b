"""The Omniglot benchmark: alphabets as 20-way tasks with a fixed identity per run (appendix D)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import Tensor, nn

from leap.models import ConvNet
from leap.tasks.base import Task
from leap.tasks.omniglot.augment import (
    AUGMENTATION,
)
from leap.tasks.omniglot.constants import (
    BN_EVAL,
    DRAWINGS,
    IMAGE_SIZE,
    NUM_CLASSES,
    OFFICIAL_COUNTS,
    TEST_DRAWINGS,
    OmniglotSizeWarning,
)
from leap.tasks.omniglot.data import OmniglotData, load_omniglot
from leap.util.checks import positive_int
from leap.util.seeding import derived_generator


# ---------------------------------------------------------------------- the benchmark
class OmniglotBenchmark:
    """20-way alphabet tasks on Omniglot (see the module docstring for the protocol).

    ``seed`` fixes the assignment of alphabets to splits; ``num_pretrain`` and
    ``num_test`` are the sizes of the pretraining pool and the test split (paper: 25
    and 10), validation gets the remaining kept alphabets and must not be empty.
    ``pipeline`` and ``bn_eval`` are described in the module docstring.
    """

    name = "omniglot"
    num_classes = NUM_CLASSES
    image_size = IMAGE_SIZE
    train_per_class = DRAWINGS - TEST_DRAWINGS
    test_per_class = TEST_DRAWINGS

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        num_pretrain: int = 25,
        num_test: int = 10,
        pipeline: str = "released",
        bn_eval: str = "running",
    ) -> None:
        positive_int("num_pretrain", num_pretrain)
        positive_int("num_test", num_test)
        if bn_eval not in BN_EVAL:
            raise ValueError(f"bn_eval must be one of {BN_EVAL}, got {bn_eval!r}")
        self.device = torch.device(device)
        self.seed = seed
        self.pipeline = pipeline
        self.bn_eval = bn_eval
        data = load_omniglot(data_dir, cache_dir, pipeline)
        _warn_if_not_official(data)

        # All images on the device as uint8 (4x smaller than float); scaled at use.
        self.images = torch.from_numpy(data.images).unsqueeze(1).to(self.device)  # (N, 1, 28, 28)
        self.image_character = torch.from_numpy(data.image_character.astype(np.int64))  # (N,)
        self.character_alphabet = torch.from_numpy(data.character_alphabet.astype(np.int64))  # (C,)
        self.image_alphabet = self.character_alphabet[self.image_character]  # (N,)
        self.alphabet_names = data.alphabet_names
        self.alphabet_parts = data.alphabet_parts
        self.character_names = data.character_names
        # (C, 20) image indices of each character, drawings in file order: images are
        # stored character by character (OmniglotData.check), so this is a reshape.
        self.character_images = torch.arange(len(data.images)).view(-1, DRAWINGS)
        self._alphabet_characters = [
            torch.nonzero(self.character_alphabet == a).flatten() for a in range(len(self.alphabet_names))
        ]

        self.kept_alphabets = [a for a, chars in enumerate(self._alphabet_characters) if len(chars) >= NUM_CLASSES]
        needed = num_pretrain + num_test + 1
        if len(self.kept_alphabets) < needed:
            raise ValueError(
                f"Omniglot data has {len(self.kept_alphabets)} alphabets with >= {NUM_CLASSES} characters; "
                f"num_pretrain={num_pretrain} + num_test={num_test} + at least 1 for validation needs {needed}"
            )
        order = torch.randperm(len(self.kept_alphabets), generator=torch.Generator().manual_seed(seed)).tolist()
        shuffled = [self.kept_alphabets[i] for i in order]
        self.splits: dict[str, list[int]] = {
            "train": shuffled[:num_pretrain],
            "test": shuffled[num_pretrain : num_pretrain + num_test],
            "val": shuffled[num_pretrain + num_test :],
        }

    # Sizes of the whole dataset as read (before dropping small alphabets).
    @property
    def num_alphabets(self) -> int:
        return len(self.alphabet_names)

    @property
    def num_characters(self) -> int:
        return len(self.character_names)

    @property
    def num_images(self) -> int:
        return len(self.images)

    def make_model(self) -> nn.Module:
        return ConvNet(in_channels=1, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                       running_stats=self.bn_eval == "running",
                       bn_weight_init="uniform" if self.pipeline == "released" else "ones").to(self.device)

    def num_sources(self, split: str) -> int:
        return len(self._split(split))

    def split_alphabets(self, split: str) -> list[str]:
        """Names of the alphabets of ``split``, in source order."""
        return [self.alphabet_names[a] for a in self._split(split)]

    def task(self, split: str, source: int, generator: torch.Generator, task_seed: int = 0) -> Task:
        """The 20-way task of alphabet ``source`` of ``split``, for one visit.

        Its characters and labels depend on ``task_seed`` alone (a run passes its seed),
        so they are the same at every visit;
        ``generator`` (this visit's) augments the test set and, through
        ``Task.augment``, the training minibatches. ``train_x`` (300, 1, 28, 28) float in
        [0, 1], unaugmented; ``test_x`` (100, 1, 28, 28), augmented here. Labels are
        class-major: 15 (train) or 5 (test) consecutive images per class. ``meta``
        records the split, the characters and the image indices used.
        """
        alphabets = self._split(split)
        if not 0 <= source < len(alphabets):
            raise ValueError(f"source must be in [0, {len(alphabets)}) for split {split!r}, got {source}")
        alphabet = alphabets[source]
        chars = self._alphabet_characters[alphabet]
        identity = derived_generator(task_seed, "omniglot-task", split, alphabet)
        pick = torch.randperm(len(chars), generator=identity)[:NUM_CLASSES]
        chosen = chars[pick]  # (20,) character indices; label = position
        drawings = self.character_images[chosen]  # (20, 20) image indices, file order
        train_index = drawings[:, : self.train_per_class].reshape(-1)
        test_index = drawings[:, self.train_per_class :].reshape(-1)
        labels = torch.arange(NUM_CLASSES)
        train_y = labels.repeat_interleave(self.train_per_class).to(self.device)
        test_y = labels.repeat_interleave(self.test_per_class).to(self.device)
        augment = AUGMENTATION[self.pipeline]
        test_x = augment(self.pixels(test_index), generator)
        return Task(
            name=self.alphabet_names[alphabet], train_x=self.pixels(train_index), train_y=train_y,
            test_x=test_x, test_y=test_y, num_classes=NUM_CLASSES, augment=augment, source=source,
            meta={"split": split, "characters": [self.character_names[c] for c in chosen.tolist()],
                  "train_index": train_index, "test_index": test_index},
        )

    def pixels(self, index: Tensor) -> Tensor:
        """Images ``index`` (K,) as float (K, 1, 28, 28) in [0, 1] on the device."""
        return self.images[index.to(self.device)].float().div_(255)

    def _split(self, split: str) -> list[int]:
        if split not in self.splits:
            raise ValueError(f"split must be one of {sorted(self.splits)}, got {split!r}")
        return self.splits[split]


def _warn_if_not_official(data: OmniglotData) -> None:
    for part, expected in OFFICIAL_COUNTS.items():
        alphabets = [a for a, p in enumerate(data.alphabet_parts) if p == part]
        chars = int(np.isin(data.character_alphabet, alphabets).sum())
        found = (len(alphabets), chars, chars * DRAWINGS)
        if found != expected:
            warnings.warn(
                f"{part} holds {found[0]} alphabets, {found[1]} characters, {found[2]} images; the official "
                f"release has {expected[0]}, {expected[1]}, {expected[2]}: results will not be comparable",
                OmniglotSizeWarning, stacklevel=3,
            )
