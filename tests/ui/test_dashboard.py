"""The dashboard in a real headless Chromium against the real gateway (no stubs).

What a person must be able to see: observing a text adds a point to the surprise chart and
changes the weight hash; forking grows the lineage tree; every control has an accessible
name; the page fits 1280x800 and 390x844. Screenshots land in test-artifacts/ui/.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

CONCEPT = "Grokking is when a model suddenly generalizes after extensive overfitting."
WAIT_MS = 60_000  # first calls on a fresh memory start an actor on a busy 2-core machine

# Roles of things a person operates; each must carry a computed accessible name.
CONTROL_ROLES = {"button", "textbox", "combobox", "spinbutton", "checkbox", "radio", "tab",
                 "link", "searchbox", "slider", "switch", "DisclosureTriangle", "listbox"}


def connect(page: Page, server) -> None:
    page.goto(server.url + "/")
    page.get_by_label("API key").fill(server.api_key or "")
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "ok", timeout=WAIT_MS)


def create_in_page(page: Page, name: str) -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Create memory").click()
    expect(page.locator("#memory-title")).to_have_text(name, timeout=WAIT_MS)
    expect(page.locator("#memory-view")).to_be_visible()


def observe_in_page(page: Page, text: str) -> None:
    page.get_by_role("tab", name="Observe").click()
    page.get_by_label("Text to learn from").fill(text)
    submit = page.locator("#panel-observe button[type=submit]")
    submit.click()
    expect(page.locator("#result .result-card")).to_have_attribute("data-kind", "Learned it",
                                                                   timeout=WAIT_MS)
    expect(submit).to_be_enabled(timeout=WAIT_MS)


def chart_points(page: Page) -> int:
    return int(page.locator("#chart svg").get_attribute("data-points"))


def test_observe_adds_a_chart_point_and_changes_the_weight_hash(page, ui_server, memory_name):
    connect(page, ui_server)
    create_in_page(page, memory_name)
    expect(page.locator("#chart svg")).to_have_attribute("data-points", "0", timeout=WAIT_MS)
    hash_el = page.locator("#stat-hash code")
    expect(hash_el).to_have_attribute("title", re.compile(r"^[0-9a-f]{64}$"), timeout=WAIT_MS)
    initial = hash_el.get_attribute("title")

    observe_in_page(page, CONCEPT)
    expect(page.locator("#chart svg")).to_have_attribute("data-points", "1", timeout=WAIT_MS)
    expect(hash_el).not_to_have_attribute("title", initial, timeout=WAIT_MS)
    after_one = hash_el.get_attribute("title")
    result = page.locator("#result")
    expect(result).to_contain_text(f"weights changed: {initial[:6]} → {after_one[:6]}")

    with ui_server.rest() as rest:  # the page shows the server's truth, not its own guess
        stats = rest.get(f"/v1/memories/{memory_name}/stats").json()
    assert stats["weight_hash"] == after_one
    assert stats["total_observations"] == 1
    # The capacity tile also says how full the pattern book is and what the saved state weighs.
    expect(page.locator("#stat-size")).to_have_text(
        f"1 pattern · {stats['size_mb']:.1f} MB", timeout=WAIT_MS)

    observe_in_page(page, CONCEPT)
    expect(page.locator("#chart svg")).to_have_attribute("data-points", "2", timeout=WAIT_MS)
    expect(hash_el).not_to_have_attribute("title", after_one, timeout=WAIT_MS)
    expect(result).to_contain_text(re.compile(r"surprise fell \d\.\d\d → \d\.\d\d"))
    expect(page.locator("#recent tbody tr")).to_have_count(2)
    expect(page.locator("#hashes .hash-change").first).to_contain_text("weights changed")


def test_checkpoint_restore_and_fork_grow_the_lineage_tree(page, ui_server, memory_name):
    connect(page, ui_server)
    create_in_page(page, memory_name)
    observe_in_page(page, CONCEPT)
    tree = page.locator("#lineage")
    expect(tree.locator(f".tree-memory[data-name='{memory_name}']")).to_have_count(1,
                                                                                  timeout=WAIT_MS)
    before = tree.locator(".tree-memory").count()

    page.get_by_role("tab", name="Checkpoint").click()
    page.get_by_label("Tag", exact=True).fill("stable-v1")
    page.get_by_role("button", name="Save checkpoint").click()
    # this memory's own checkpoint (other tests' memories of the tenant may carry the same tag)
    checkpoint = tree.locator(f"li:has(> .memory-node > .tree-memory[data-name='{memory_name}']) > ul > li "
                              "> .tree-checkpoint[data-tag='stable-v1']")
    expect(checkpoint).to_have_count(1, timeout=WAIT_MS)
    stable = page.locator("#stat-hash code").get_attribute("title")

    observe_in_page(page, "An experiment that will be undone")
    hash_el = page.locator("#stat-hash code")
    expect(hash_el).not_to_have_attribute("title", stable, timeout=WAIT_MS)
    page.get_by_role("tab", name="Restore").click()
    page.get_by_label("Checkpoint to restore").select_option("stable-v1")
    page.get_by_role("button", name="Restore", exact=True).click()
    expect(page.locator("#result")).to_contain_text("1 observation(s)", timeout=WAIT_MS)
    expect(hash_el).to_have_attribute("title", stable, timeout=WAIT_MS)
    expect(page.locator("#recent tr.undone")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#chart circle.undone")).to_have_count(1)

    branch = f"{memory_name}-b"
    page.get_by_role("tab", name="Fork").click()
    page.get_by_label("New memory name").fill(branch)
    page.get_by_label("Start from").select_option("stable-v1")
    page.get_by_role("button", name="Fork", exact=True).click()
    expect(page.locator("#result")).to_contain_text(f"{branch} now branches off", timeout=WAIT_MS)

    # The new branch hangs under the checkpoint it came from, not just anywhere in the tree.
    nested = tree.locator(f"li:has(> .tree-checkpoint[data-tag='stable-v1']) "
                          f".tree-memory[data-name='{branch}']")
    expect(nested).to_have_count(1, timeout=WAIT_MS)
    assert tree.locator(".tree-memory").count() == before + 1
    with ui_server.rest() as rest:
        nodes = {n["name"]: n for n in rest.get("/v1/lineage", params={"prefix": memory_name}).json()["memories"]}
    assert nodes[branch]["source_tag"] == "stable-v1"
    assert str(nodes[branch]["parent"]).split("/")[-1] == memory_name

    nested.click()  # opening a node in the tree selects that memory
    expect(page.locator("#memory-title")).to_have_text(branch)
    expect(page.locator("#stat-hash code")).to_have_attribute("title", stable, timeout=WAIT_MS)


def accessible_names(page: Page) -> list[tuple[str, str]]:
    """(role, computed name) of every control Chromium's accessibility tree exposes now."""
    cdp = page.context.new_cdp_session(page)
    nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    cdp.detach()
    found = []
    for node in nodes:
        role = node.get("role", {}).get("value")
        if node.get("ignored") or role not in CONTROL_ROLES:
            continue
        found.append((role, str(node.get("name", {}).get("value", "")).strip()))
    return found


def test_every_control_has_an_accessible_name(page, ui_server, memory_name):
    connect(page, ui_server)
    create_in_page(page, memory_name)
    tabs = page.get_by_role("tab")
    seen: list[tuple[str, str]] = []
    for i in range(tabs.count()):  # each tab shows a different form; check them all
        tabs.nth(i).click()
        seen += accessible_names(page)
    unnamed = [role for role, name in seen if not name]
    assert not unnamed, f"controls without an accessible name: {unnamed}"
    roles = {role for role, _ in seen}
    assert {"button", "textbox", "combobox", "spinbutton", "tab"} <= roles
    # Belt and braces for controls the tree may skip (hidden panels): a label or aria-label.
    missing = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !el.getAttribute('aria-labelledby')).map(el => el.id || el.name)""")
    assert not missing, f"form fields without a <label>: {missing}"


def test_keyboard_only_surprise_check(page, ui_server, memory_name):
    connect(page, ui_server)
    create_in_page(page, memory_name)
    page.get_by_role("tab", name="Observe").focus()
    page.keyboard.press("ArrowRight")  # ARIA tabs: arrows move between tabs
    expect(page.get_by_role("tab", name="Surprise")).to_be_focused()
    expect(page.locator("#panel-surprise")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Text to check")).to_be_focused()
    page.keyboard.type("What is grokking?")
    page.keyboard.press("Enter")
    expect(page.locator("#result .result-card")).to_have_attribute("data-kind", "Surprise",
                                                                   timeout=WAIT_MS)
    expect(page.locator("#result")).to_contain_text(re.compile(r"\d\.\d\d — "))


def test_layout_fits_1280x800_and_390x844_with_screenshots(page, ui_server, memory_name, artifacts):
    connect(page, ui_server)
    create_in_page(page, memory_name)
    for text in (CONCEPT, CONCEPT, "Use a context manager (with open()) to handle files in Python"):
        observe_in_page(page, text)
    expect(page.locator("#chart svg")).to_have_attribute("data-points", "3", timeout=WAIT_MS)
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        # The chart redraws for the new width (ResizeObserver); wait until it has.
        page.wait_for_function("() => { const s = document.querySelector('#chart svg');"
                               " return s && Math.abs(s.clientWidth - s.parentElement.clientWidth) < 2; }")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"page is {overflow}px wider than a {width}px screen"
        # Measured in one script: a stats refresh may swap the <svg> between a locator's
        # lookup and its measurement, which makes Locator.bounding_box() return None.
        chart_width = page.evaluate("() => document.querySelector('#chart svg').getBoundingClientRect().width")
        assert width * 0.6 < chart_width <= width, f"chart is {chart_width}px on {width}px"
        for button in page.locator("#panel-observe button").all():
            box = button.bounding_box()  # every visible button stays on screen
            assert box["x"] >= 0 and box["x"] + box["width"] <= width
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(artifacts / f"dashboard-{width}x{height}.png"))
        page.screenshot(path=str(artifacts / f"dashboard-{width}x{height}-full.png"), full_page=True)


def test_server_error_message_is_shown(page, ui_server):
    connect(page, ui_server)
    page.get_by_label("Name", exact=True).fill("Bad Name!")  # refused by the browser's pattern
    page.get_by_role("button", name="Create memory").click()
    assert page.evaluate("() => document.getElementById('create-name').validity.valid") is False

    name = f"dup-{page.evaluate('() => Date.now()')}"
    with ui_server.rest() as rest:
        rest.post("/v1/memories", json={"name": name}).raise_for_status()
        expected = rest.post("/v1/memories", json={"name": name}).json()["error"]["message"]
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Create memory").click()
    expect(page.locator("#error-banner")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#error-banner")).to_contain_text(expected)


def test_a_rate_limited_read_is_waited_out_not_shown_as_empty(page, ui_server, memory_name):
    """The rate limit is per key, so an open tab shares it with the user's agents: a refused
    call did nothing and is sent again after Retry-After (never taken for "no checkpoints").
    The first two lineage reads (which carry each memory's checkpoints) get the gateway's 429
    (its body and header, as the rate limit middleware sends them); the real answer follows."""
    import json

    with ui_server.rest() as rest:
        rest.post("/v1/memories", json={"name": memory_name, "config": {"encoder": "hash"}}).raise_for_status()
        rest.post(f"/v1/memories/{memory_name}/observe", json={"context": CONCEPT}).raise_for_status()
        rest.post(f"/v1/memories/{memory_name}/checkpoints", json={"tag": "kept-v1"}).raise_for_status()
    connect(page, ui_server)
    refused = []

    def limit(route):
        if len(refused) < 2:
            refused.append(route.request.url)
            body = {"error": {"code": "rate_limited", "message": "rate limit: slow down (NMEM_RATE_LIMIT_PER_SECOND)"}}
            return route.fulfill(status=429, headers={"Retry-After": "1", "content-type": "application/json"},
                                 body=json.dumps(body))
        return route.continue_()

    page.route(lambda url: "/v1/lineage" in url, limit)
    tags = page.evaluate("""async (name) => {
        const { api } = await import("/ui/api.js");
        const found = (await api.lineage({ prefix: name })).memories.find((m) => m.name === name);
        return found.checkpoints.map((c) => c.tag);
    }""", memory_name)
    assert tags == ["kept-v1"] and len(refused) == 2
    page.get_by_label("Find memories by name").fill(memory_name)  # and the page built on it offers the tag
    page.locator(f"#memory-list .memory-item[data-name='{memory_name}']").click(timeout=WAIT_MS)
    expect(page.locator("#memory-title")).to_have_text(memory_name, timeout=WAIT_MS)
    page.get_by_role("tab", name="Restore").click()
    expect(page.get_by_label("Checkpoint to restore").locator("option[value='kept-v1']")).to_have_count(
        1, timeout=WAIT_MS)
