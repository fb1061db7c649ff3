"""Shared test fixtures. Tests run on CPU in fp32 with tiny configs; data comes from scikit-learn's bundled
digits or ../shared/data (skipped with a reason where absent). Nothing here reaches the network."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def shared_data(name: str) -> Path:
    """Path of a data set in ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the real data sets live in ../shared/data beside the checkout)")
    return path
