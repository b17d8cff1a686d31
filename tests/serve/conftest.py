"""Clients for the session gateway (tests/fixtures/gateway.py): plain httpx over real HTTP."""

from __future__ import annotations

import uuid
from typing import Iterator

import httpx
import pytest

TIMEOUT = httpx.Timeout(120.0, connect=10.0)  # a first call may start an actor on a busy box


@pytest.fixture
def api(gateway) -> Iterator[httpx.Client]:
    """REST client authenticated as tenant A."""
    with httpx.Client(base_url=gateway.base_url, headers=gateway.headers(), timeout=TIMEOUT) as c:
        yield c


@pytest.fixture
def api_b(gateway) -> Iterator[httpx.Client]:
    """REST client authenticated as tenant B."""
    with httpx.Client(base_url=gateway.base_url, headers=gateway.headers(gateway.tenant_b),
                      timeout=TIMEOUT) as c:
        yield c


@pytest.fixture
def anon(gateway) -> Iterator[httpx.Client]:
    """REST client without any key."""
    with httpx.Client(base_url=gateway.base_url, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture
def fresh_name() -> str:
    """A memory name no other test uses."""
    return f"m-{uuid.uuid4().hex[:10]}"
