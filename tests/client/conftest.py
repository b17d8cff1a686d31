"""Fixtures for the Python client's tests: clients for the session gateway, a second server.

`gateway_b` is another gateway app on the same Serve (under /b) with its own Valkey, data dir
and Ray namespace: the "other server" an image is pulled into. Its image upload limit is
small (GATEWAY_B_MAX_IMAGE_BYTES; an image of a hash-encoder memory is ~4.2 MB) so the 413
can be tested without sending half a gigabyte.
"""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from tests.fixtures.gateway import GatewayServer, deploy_gateway

TIMEOUT_S = 120.0  # a first call may start an actor on a busy 2-core box
GATEWAY_B_MAX_IMAGE_BYTES = 8 * 1024 * 1024


@pytest.fixture
def nm(gateway):
    from neural_memory import Client

    with Client(gateway.base_url, api_key=gateway.key_a, timeout=TIMEOUT_S) as client:
        yield client


@pytest.fixture
def fresh_name() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def gateway_b(gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    port = int(gateway.base_url.rsplit(":", 1)[1])
    with deploy_gateway(tmp_path_factory.mktemp("gateway-b"), "nmem-gateway-b", "/b", port,
                        max_image_bytes=GATEWAY_B_MAX_IMAGE_BYTES) as b:
        yield b


@pytest.fixture
def nm_b(gateway_b):
    from neural_memory import Client

    with Client(gateway_b.base_url, api_key=gateway_b.key_a, timeout=TIMEOUT_S) as client:
        yield client
