from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The real data every test reads lives beside the project, never inside it (shared/data/README.md).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data; tests that need it skip, saying why, where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (see shared/data/README.md)")
    return SHARED_DATA


def pytest_configure(config):
    # One thread per test process: most tensors here are tiny, where thread start-up costs more
    # than it saves, and `make test` runs two pytest workers on a 2-core machine.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
