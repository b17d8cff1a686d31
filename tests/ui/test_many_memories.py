"""The dashboard with 10,000 memories registered: it shows one page at a time, pages forward
and back, and finds memories by the start of their name (real Chromium, real gateway).

The memories are registered straight in the gateway's Redis metadata (no actors: listing
never starts one), under names that sort after every other memory of the tenant, and
removed again afterwards.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.ui.test_dashboard import WAIT_MS, connect

MANY = 10_000
PAGE = 50  # serve/ui/app.js


@pytest.fixture(scope="module")
def many_memories(gateway):
    from actors import normalize_config
    from storage import MetadataStore
    from tests.cluster.helpers import SMALL

    meta = MetadataStore(gateway.storage["redis_url"], prefix=gateway.storage["redis_prefix"])
    config = normalize_config(SMALL)
    names = [f"{gateway.tenant_a}/zz-user-{i:05d}" for i in range(MANY)]
    for name in names:
        meta.create_memory(name, {"config": config, "encoder": config["encoder"]})
    yield [name.split("/", 1)[1] for name in names]
    for name in names:
        meta.delete_memory(name)
    meta.close()


def item_names(page) -> list[str]:
    return page.locator("#memory-list .memory-item").evaluate_all("els => els.map(e => e.dataset.name)")


def test_ten_thousand_memories_page_and_search(page, ui_server, many_memories):
    connect(page, ui_server)
    items = page.locator("#memory-list .memory-item")
    expect(items).to_have_count(PAGE, timeout=WAIT_MS)
    expect(page.locator("#page-prev")).to_be_disabled()
    expect(page.locator("#page-info")).to_have_text("1–50 of more")
    first = item_names(page)
    assert first == sorted(first)

    page.get_by_role("button", name="Next").click()
    expect(page.locator("#page-info")).to_have_text("51–100 of more", timeout=WAIT_MS)
    expect(items).to_have_count(PAGE)
    second = item_names(page)
    assert second[0] > first[-1] and not set(first) & set(second)
    page.get_by_role("button", name="Previous").click()
    expect(page.locator("#page-info")).to_have_text("1–50 of more", timeout=WAIT_MS)
    assert item_names(page) == first

    search = page.get_by_label("Find memories by name")
    search.fill("zz-user-0999")
    expect(items).to_have_count(10, timeout=WAIT_MS)
    assert item_names(page) == [f"zz-user-0999{i}" for i in range(10)]
    expect(page.locator("#page-next")).to_be_disabled()
    expect(page.locator("#page-info")).to_have_text("1–10")
    # The lineage tree follows the page: never all 10,000 nodes.
    expect(page.locator("#lineage .tree-memory")).to_have_count(10, timeout=WAIT_MS)

    search.fill("zz-user-1")  # the last of them: one page of 50 is the most ever rendered
    expect(items).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#memory-list")).to_contain_text("No memory name starts with")
    search.fill("ZZ-USER-09999")  # typed in capitals: names are lower-case
    expect(items).to_have_count(1, timeout=WAIT_MS)
    assert page.locator("#memory-list li").count() <= PAGE
    search.fill("zz user!")  # not a name: said, and polling does not put the last results back
    expect(page.locator("#memory-list .search-problem")).to_have_text("Memory names use only a-z 0-9 . _ -")
    page.wait_for_timeout(3_000)  # two polls
    expect(items).to_have_count(0)
    expect(page.locator("#memory-list .search-problem")).to_have_count(1)
