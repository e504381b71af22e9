"""Fixtures for the dag tests."""

from __future__ import annotations

import pytest

from dag.keys import SigningKey
from dag.vertex import Vertex, genesis_vertex
from tests.dag.helpers import NETWORK, seeded_key


@pytest.fixture(scope="session")
def genesis() -> Vertex:
    return genesis_vertex(NETWORK)


@pytest.fixture(scope="session")
def ed_key() -> SigningKey:
    return seeded_key("alice")


@pytest.fixture(scope="session")
def mldsa_key() -> SigningKey:
    return seeded_key("bob", "ml-dsa-65")
