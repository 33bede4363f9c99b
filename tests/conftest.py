import os
import sys
from pathlib import Path

import pytest
import torch

# tests/helpers is importable as ``helpers`` from every test directory.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _thread_policy():
    """Tests train small models: the thread policy's one thread (or OMP_NUM_THREADS), as
    leap's commands use (leap.util.threads)."""
    from leap.util.threads import choose_threads

    previous = torch.get_num_threads()
    torch.set_num_threads(choose_threads(None, small_model=True)[0])
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def _decode_cache_in_a_temporary_directory(tmp_path_factory):
    """Decoded datasets are cached under the session's temporary directory, never in the
    user's cache (each synthetic data directory would leave a file there), unless
    LEAP_CACHE_DIR names a cache to use."""
    if os.environ.get("LEAP_CACHE_DIR"):
        yield
        return
    os.environ["LEAP_CACHE_DIR"] = str(tmp_path_factory.mktemp("leap-cache"))
    yield
    del os.environ["LEAP_CACHE_DIR"]
