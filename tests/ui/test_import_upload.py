"""The dashboard's Import tab in real Chromium: a file becomes the same items as
`neural-memory import` would learn, sent in batches with visible progress."""

from __future__ import annotations

from playwright.sync_api import expect

from neural_memory.importing import ImportOptions, read_items
from tests.ui.test_dashboard import WAIT_MS, connect, create_in_page


def _import_in_page(page, ui_server, memory_name: str, path, domain: str | None = None) -> None:
    """Connect, create `memory_name`, and submit `path` in the Import tab."""
    connect(page, ui_server)
    create_in_page(page, memory_name)
    page.get_by_role("tab", name="Import").click()
    page.get_by_label("File").set_input_files(str(path))
    if domain is not None:
        page.get_by_label("Domain (optional)", exact=True).last.fill(domain)
    page.locator("#panel-import button[type=submit]").click()


def test_upload_learns_every_paragraph_with_progress(page, ui_server, memory_name, tmp_path):
    # 600 items: three batches, two of them in flight at once, learned in file order
    text = "\n\n".join(f"Paragraph {i}: the lighthouse at cape {i} blinks every {i % 9 + 2} seconds."
                       for i in range(600))
    path = tmp_path / "lighthouses.md"
    path.write_text(text)
    expected = read_items(path.read_bytes(), path.name, ImportOptions())

    _import_in_page(page, ui_server, memory_name, path, domain="coast")
    expect(page.locator("#result")).to_contain_text(f"Learned {len(expected)} items", timeout=WAIT_MS)
    expect(page.locator("#import-progress")).to_have_attribute("value", str(len(expected)))
    expect(page.locator("#import-status")).to_contain_text("items/s")

    with ui_server.rest() as rest:
        stats = rest.get(f"/v1/memories/{memory_name}/stats").json()
        history = rest.get(f"/v1/memories/{memory_name}/history", params={"limit": 1000}).json()
    assert stats["total_observations"] == len(expected) == 600
    assert stats["domains"] == ["coast"]
    assert [h["text"] for h in history["observations"]] == [i.text for i in expected]


def test_long_paragraphs_are_sent_in_batches_under_the_body_limit(page, ui_server, memory_name, tmp_path):
    # 48 paragraphs of ~30,000 characters: 1.4 MB, over the server's 1 MB body limit at once
    text = "\n\n".join(f"Report {i}: " + " ".join(f"tide{i}-{k}" for k in range(3500))[:30_000]
                       for i in range(48))
    path = tmp_path / "reports.md"
    path.write_text(text)
    expected = read_items(path.read_bytes(), path.name, ImportOptions())
    assert len(expected) == 48 and sum(len(i.text) for i in expected) > 1_300_000

    _import_in_page(page, ui_server, memory_name, path)
    expect(page.locator("#result")).to_contain_text("Learned 48 items", timeout=WAIT_MS)
    with ui_server.rest() as rest:
        stats = rest.get(f"/v1/memories/{memory_name}/stats").json()
        history = rest.get(f"/v1/memories/{memory_name}/history", params={"limit": 100}).json()
    assert stats["total_observations"] == 48
    # the history shows the start of long texts: enough to see every report once, in file order
    assert [h["text"].split(":")[0] for h in history["observations"]] == [f"Report {i}" for i in range(48)]


def test_a_bad_file_is_refused_with_the_reason(page, ui_server, memory_name, tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("id,body\n1,hello\n")
    _import_in_page(page, ui_server, memory_name, path)
    expect(page.locator("#result")).to_contain_text("has no column 'text'", timeout=WAIT_MS)
    with ui_server.rest() as rest:
        assert rest.get(f"/v1/memories/{memory_name}/stats").json()["total_observations"] == 0


def test_the_same_file_under_another_domain_is_learned_again(page, ui_server, memory_name, tmp_path):
    """The batches' request ids name the domain too: under the same ids as the first upload the
    second was refused (409) while a batch in flight behind the refused one was learned."""
    path = tmp_path / "notes.md"
    path.write_text("\n\n".join(f"Note {i}: the ferry leaves pier {i} at {i % 12 + 1} o'clock." for i in range(300)))
    _import_in_page(page, ui_server, memory_name, path, domain="work")
    expect(page.locator("#result")).to_contain_text("Learned 300 items", timeout=WAIT_MS)
    page.evaluate("document.getElementById('result').textContent = ''")  # the next answer, not this one
    page.get_by_label("Domain (optional)", exact=True).last.fill("personal")
    page.locator("#panel-import button[type=submit]").click()
    expect(page.locator("#result")).to_contain_text("Learned 300 items", timeout=WAIT_MS)
    with ui_server.rest() as rest:
        stats = rest.get(f"/v1/memories/{memory_name}/stats").json()
    assert stats["total_observations"] == 600 and stats["domains"] == ["personal", "work"], stats
