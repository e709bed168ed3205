from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests import fixture_data

# The real data lives beside the project, never inside it (shared/data/README.md). Point
# MULTISSL_SHARED_DATA elsewhere to move it, or at a missing folder (MULTISSL_SHARED_DATA=/nonexistent)
# to see what a fresh clone without ../shared sees.
SHARED_DATA = Path(os.environ.get("MULTISSL_SHARED_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data (../shared/data): only for tests that assert facts of the real files
    (counts, published scores, accuracy on real data); they skip, saying why, where it is absent.
    Every other test reads ``data_root``."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (see shared/data/README.md); "
                    "this test checks facts of the real files, the synthetic tree cannot stand in")
    return SHARED_DATA


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A small synthetic tree with the layout and formats of ../shared/data (tests/fixture_data.py),
    built once per test process; always available. Spawned processes find it through
    ``fixture_data.data_root()`` (the path is published in the environment they inherit)."""
    root = fixture_data.build(tmp_path_factory.getbasetemp() / "synthetic_data")
    os.environ[fixture_data.ENVIRONMENT_VARIABLE] = str(root)
    return root


def pytest_configure(config):
    # One thread per test process: most tensors here are tiny, where thread start-up costs more
    # than it saves, and `make test` runs two pytest workers on a 2-core machine.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
