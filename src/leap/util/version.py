"""The version of leap: its one source (``leap.__version__``, the package metadata and
``leap --version`` read it)."""

VERSION = "0.1.0"
