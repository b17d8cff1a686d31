"""Property: no tenant ever sees another tenant's memory, over REST or MCP.

Hypothesis drives two tenants through random interleavings of create / observe / delete on a
small pool of names that both use (names are scoped by tenant, so alice's `x` and bob's `x` are
different memories), each call over REST or MCP at random. After every step each tenant's view,
over both protocols, must equal a model of that tenant's own actions alone: the names it lists
and each memory's observation count. Bounded (a few examples of a few steps): every create
starts an actor.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.serve.test_mcp import call, mcp_client

CONFIG = {"encoder": "hash", "memory_width": 64, "value_dim": 32, "pattern_slots": 64}
PROTOCOLS = st.sampled_from(["rest", "mcp"])


class TwoTenants(RuleBasedStateMachine):
    gateway: Any = None  # set by the test before running

    def __init__(self) -> None:
        super().__init__()
        run = uuid.uuid4().hex[:6]
        self.names = [f"iso-{run}-{i}" for i in range(3)]
        self.tenants = [self.gateway.tenant_a, self.gateway.tenant_b]
        self.model: dict[str, dict[str, int]] = {t: {} for t in self.tenants}  # name -> observations
        self.rest = {t: httpx.Client(base_url=self.gateway.base_url, headers=self.gateway.headers(t),
                                     timeout=120) for t in self.tenants}

    # ---- calls over either protocol ------------------------------------------------------
    def _mcp(self, tenant: str, tool: str, **args: Any) -> dict | None:
        async def run() -> dict | None:
            async with mcp_client(self.gateway.mcp_url, self.gateway.keys[tenant]) as client:
                result = await client.call_tool(tool, args)
                return None if result.is_error else result.structured_content
        return anyio.run(run)

    def _listed(self, tenant: str, protocol: str) -> set[str]:
        if protocol == "rest":
            body = self.rest[tenant].get("/v1/memories").json()
        else:
            body = anyio.run(self._mcp_list, tenant)
        return {m["name"] for m in body["memories"]} & set(self.names)

    async def _mcp_list(self, tenant: str) -> dict:
        async with mcp_client(self.gateway.mcp_url, self.gateway.keys[tenant]) as client:
            return await call(client, "list_memories")

    def _observations(self, tenant: str, name: str, protocol: str) -> int | None:
        if protocol == "rest":
            response = self.rest[tenant].get(f"/v1/memories/{name}/stats")
            return response.json()["total_observations"] if response.status_code == 200 else None
        stats = self._mcp(tenant, "stats", memory=name)
        return None if stats is None else stats["total_observations"]

    # ---- rules ---------------------------------------------------------------------------
    @rule(who=st.integers(0, 1), which=st.integers(0, 2), protocol=PROTOCOLS)
    def create(self, who: int, which: int, protocol: str) -> None:
        tenant, name = self.tenants[who], self.names[which]
        if protocol == "rest":
            created = self.rest[tenant].post("/v1/memories", json={"name": name, "config": CONFIG})
            done = created.status_code == 201
        else:
            done = self._mcp(tenant, "create_memory", memory=name, config=CONFIG) is not None
        assert done == (name not in self.model[tenant])  # taken only by this tenant's own
        self.model[tenant].setdefault(name, 0)

    @rule(who=st.integers(0, 1), which=st.integers(0, 2), protocol=PROTOCOLS)
    def observe(self, who: int, which: int, protocol: str) -> None:
        tenant, name = self.tenants[who], self.names[which]
        text = f"{tenant} writes to {name}"
        if protocol == "rest":
            done = self.rest[tenant].post(f"/v1/memories/{name}/observe",
                                          json={"context": text}).status_code == 200
        else:
            done = self._mcp(tenant, "observe", memory=name, context=text) is not None
        assert done == (name in self.model[tenant])
        if done:
            self.model[tenant][name] += 1

    @rule(who=st.integers(0, 1), which=st.integers(0, 2), protocol=PROTOCOLS)
    def delete(self, who: int, which: int, protocol: str) -> None:
        tenant, name = self.tenants[who], self.names[which]
        if protocol == "rest":
            done = self.rest[tenant].delete(f"/v1/memories/{name}").status_code == 204
        else:
            done = self._mcp(tenant, "delete_memory", memory=name) is not None
        assert done == (name in self.model[tenant])
        self.model[tenant].pop(name, None)

    @invariant()
    def each_tenant_sees_exactly_its_own(self) -> None:
        for tenant in self.tenants:
            for protocol in ("rest", "mcp"):
                assert self._listed(tenant, protocol) == set(self.model[tenant]), (tenant, protocol)
            for name in self.names:
                protocol = "rest" if hash((tenant, name)) % 2 else "mcp"
                assert self._observations(tenant, name, protocol) == self.model[tenant].get(name)

    def teardown(self) -> None:
        for tenant in self.tenants:
            for name in self.model[tenant]:
                self.rest[tenant].delete(f"/v1/memories/{name}")
            self.rest[tenant].close()


@pytest.mark.timeout(900)
def test_no_tenant_ever_sees_another_tenants_memory(gateway):
    TwoTenants.gateway = gateway
    machine = settings(max_examples=4, stateful_step_count=6, deadline=None,
                       suppress_health_check=list(HealthCheck))(TwoTenants)
    machine.TestCase().runTest()
