"""Schemathesis over /openapi.json with both tenants' keys: no generated request gets a 5xx.

Bounded (a few examples per operation) so it fits the suite; memories it happens to create
are deleted afterwards.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

MAX_EXAMPLES = 4


@pytest.fixture(scope="module")
def api_schema(gateway):
    schema = schemathesis.openapi.from_url(f"{gateway.base_url}/openapi.json")
    return schema.include(path_regex="^/v1/")


@pytest.fixture(scope="module", autouse=True)
def forget_what_the_fuzzer_made(gateway):
    """Delete every memory the generated requests created (they would hold actors)."""
    def names(tenant: str) -> set[str]:
        body = httpx.get(f"{gateway.base_url}/v1/memories", headers=gateway.headers(tenant), timeout=120).json()
        return {m["name"] for m in body["memories"]}

    before = {t: names(t) for t in (gateway.tenant_a, gateway.tenant_b)}
    yield
    for tenant, old in before.items():
        for name in names(tenant) - old:
            httpx.delete(f"{gateway.base_url}/v1/memories/{name}", headers=gateway.headers(tenant), timeout=120)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.parametrize("tenant", ["a", "b"])
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case, gateway, tenant):
    key = gateway.key_a if tenant == "a" else gateway.key_b
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=[not_a_server_error],
                           timeout=120)
