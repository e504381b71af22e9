"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The FANN datasets and C FANN reference outputs live beside the repository,
# in ../shared, both in a developer's checkout and in CI.
FANN_DATASETS = REPO.parent / "shared" / "datasets" / "fann"


@pytest.fixture(scope="session")
def fann_datasets() -> Path:
    """Return the FANN dataset folder, or skip when ../shared is absent."""
    if not (FANN_DATASETS / "README.md").is_file():
        pytest.skip(f"FANN datasets not found at {FANN_DATASETS} (../shared absent)")
    return FANN_DATASETS
