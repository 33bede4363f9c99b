"""Few-shot classification (section 4.1): the built-in benchmark and Omniglot, their trainer, commands and report."""
