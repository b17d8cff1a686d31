"""`neural-memory import`: files -> batches -> a memory, resumable, and bad files refused whole.

Runs the real command (a subprocess) against the session gateway, and `ImportRun` in-process
where a crash has to land at an exact point (after the server applied a batch, before the
journal recorded it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from errors import InvalidInput
from neural_memory import Client
from neural_memory.importing import ImportOptions, ImportRun, Journal, plan_import, read_items

CONFIG = {"encoder": "hash", "memory_width": 256, "value_dim": 64}
CLI = str(Path(sys.executable).with_name("neural-memory"))


@pytest.fixture
def journals(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "journals"
    monkeypatch.setenv("NMEM_IMPORT_JOURNAL_DIR", str(path))
    return path


@pytest.fixture
def client(gateway):
    with Client(gateway.base_url, gateway.key_a) as c:
        yield c


def _notes(path: Path, n: int) -> Path:
    path.write_text("\n\n".join(f"Note {i}: the tide at harbour {i % 17} turns at {i % 24} o'clock."
                                for i in range(n)) + "\n")
    return path


def _cli(gateway, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([CLI, "import", *args, "--url", gateway.base_url, "--api-key", gateway.key_a],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, **kw)


def _stats(client: Client, name: str):
    return client.stats(name)


def test_formats_split_as_documented(tmp_path):
    md = b"# Title\n\nFirst paragraph\nwraps here.  Second sentence!\n\n\nLast one."
    assert [i.text for i in read_items(md, "a.md", ImportOptions())] == \
        ["# Title", "First paragraph wraps here. Second sentence!", "Last one."]
    assert [i.text for i in read_items(md, "a.md", ImportOptions(split="sentence"))] == \
        ["# Title", "First paragraph wraps here.", "Second sentence!", "Last one."]
    prose = b"Dr. Smith met J. R. Jones in the U.S. last year. He said no. No way, e.g. Fig. 2 shows. So did I. Then plan b. Done."
    assert [i.text for i in read_items(prose, "p.txt", ImportOptions(split="sentence"))] == \
        ["Dr. Smith met J. R. Jones in the U.S. last year.", "He said no.", "No way, e.g. Fig. 2 shows.",
         "So did I.", "Then plan b.", "Done."]
    jsonl = b'{"text": "a fact", "domain": "geo"}\n\n{"text": "another"}\n{"text": "a third", "domain": null}\n'
    items = read_items(jsonl, "f.jsonl", ImportOptions(domain="misc"))
    assert [(i.text, i.domain) for i in items] == [("a fact", "geo"), ("another", "misc"), ("a third", "misc")]
    rows = b"id,body,topic\n1,the sky is blue,sky\n2,,sky\n3,grass is green,plants,,\n4,\xe2\x80\x8b,sky\n"
    items = read_items(rows, "r.csv", ImportOptions(column="body", domain_column="topic"))
    assert [(i.text, i.domain, i.where) for i in items] == [("the sky is blue", "sky", "r.csv:2"),
                                                            ("grass is green", "plants", "r.csv:4")]
    # a JSON string may hold U+2028 or U+0085 raw: they do not end a line; a quoted CSV cell
    # may span lines (its row is named by its first line)
    raw = '{"text": "one\u2028two\u0085three"}\n'.encode()
    assert [i.text for i in read_items(raw, "u.jsonl", ImportOptions())] == ["one\u2028two\u0085three"]
    # a line of only zero-width characters is blank: it ends a paragraph and is no item
    invisible = "one\n\u200b\u2060\ntwo\n".encode()
    assert [i.text for i in read_items(invisible, "z.txt", ImportOptions())] == ["one", "two"]
    assert [i.text for i in read_items(invisible, "z.txt", ImportOptions(split="line"))] == ["one", "two"]
    quoted = b'text\n"line one\nline two, with ""quotes"""\nnext\n'
    assert [(i.text, i.where) for i in read_items(quoted, "q.csv", ImportOptions())] == \
        [('line one\nline two, with "quotes"', "q.csv:2"), ("next", "q.csv:4")]
    # a fenced code block is one paragraph, blank lines inside it and all
    fenced = b"Install it.\n\n```python\ndef f():\n\n    return 1\n```\n\nAfter the code.\n"
    assert [(i.text, i.where) for i in read_items(fenced, "f.md", ImportOptions())] == \
        [("Install it.", "f.md:1"), ("```python def f(): return 1 ```", "f.md:3"), ("After the code.", "f.md:9")]
    # lines are counted as editors and `grep -n` count them: a form feed (pdftotext's page
    # break), U+2028 or U+0085 inside a line is whitespace, not a line end
    paged = "one\x0c\ntwo\r\n\r\nthree \u2028 and\x85 more\rfour\n".encode()
    assert [(i.text, i.where) for i in read_items(paged, "p.txt", ImportOptions())] == \
        [("one two", "p.txt:1"), ("three and more four", "p.txt:4")]
    assert [(i.text, i.where) for i in read_items(paged, "p.txt", ImportOptions(split="line"))] == \
        [("one", "p.txt:1"), ("two", "p.txt:2"), ("three and more", "p.txt:4"), ("four", "p.txt:5")]
    with pytest.raises(InvalidInput, match="long.txt:3"):
        read_items(b"a\x0cb\n\x0c\n" + b"word " * 7000 + b"\n", "long.txt", ImportOptions())


@pytest.mark.parametrize("name, data, options, words", [
    ("bin.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", {}, ["binary"]),
    ("latin.txt", "café".encode("latin-1"), {}, ["UTF-8"]),
    ("empty.md", b"\n \n\t\n", {}, ["no text"]),
    ("huge.txt", b"word " * 10_485_760 + b"\n", {}, ["huge.txt:1", "limit", "--split"]),
    ("rows.csv", b"id,body\n1,x\n", {"column": "text"}, ["no column 'text'", "['id', 'body']"]),
    ("bad.jsonl", b'{"text": "ok"}\n{"text": oops}\n', {}, ["bad.jsonl:2", "JSON"]),
    ("nofield.jsonl", b'{"body": "x"}\n', {}, ["nofield.jsonl:1", '"text"']),
    ("notes.docx", b"text", {}, ["--format"]),
    ("zw.jsonl", '{"text": "ok"}\n{"text": "\u200b\ufeff"}\n'.encode(), {}, ["zw.jsonl:2", "no visible character"]),
    ("half.jsonl", b'{"text": "ok"}\n{"text": "a \\ud800 b"}\n', {}, ["half.jsonl:2", "surrogate"]),
    ("deep.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", {}, ["deep.jsonl:1", "nested too deeply"]),
    ("digits.jsonl", b'{"text": "x", "n": ' + b"9" * 5000 + b"}\n", {}, ["digits.jsonl:1", "digits"]),
    ("domain.jsonl", b'{"text": "x"}\n{"text": "y", "domain": ""}\n', {}, ["domain.jsonl:2", "domain"]),
    ("blank.jsonl", b'{"text": "x", "domain": "   "}\n', {}, ["blank.jsonl:1", "domain has no visible"]),
    ("typed.jsonl", b'{"text": "x", "domain": 5}\n', {}, ["typed.jsonl:1", "domain must be a string", "got int"]),
    ("stray.csv", b'text\nrow 1\n"stray quote\n' + b"row\n" * 50, {}, ["stray.csv:3", "quote"]),
    ("wide.csv", b"text\n" + b"x" * 200_000 + b"\n", {}, ["wide.csv:2", "131,072"]),
    ("comma.csv", b"text\nhello, world\n", {}, ["comma.csv:2", "2 fields", "quote"]),
    ("twice.csv", b"text,text\na,b\n", {}, ["2 columns named 'text'"]),
    ("utf16.txt", "caf\u00e9 notes".encode("utf-16"), {}, ["UTF-16", "iconv"]),
])
def test_bad_files_are_refused_with_a_clear_error(name, data, options, words):
    with pytest.raises(InvalidInput) as caught:
        read_items(data, name, ImportOptions(**options))
    assert all(w in str(caught.value) for w in words), caught.value


def test_a_bad_file_learns_nothing_even_after_good_ones(gateway, client, tmp_path, journals, fresh_name):
    good = _notes(tmp_path / "good.md", 30)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,body\n1,hello\n")
    done = _cli(gateway, str(good), str(bad), "--memory", fresh_name, "--create")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 1 and "bad.csv has no column 'text'" in err, (out, err)
    assert "Traceback" not in err
    # checked before anything was sent: the memory was not even created, no journal written
    assert fresh_name not in [m.name for m in client.list_memories().memories]
    assert not journals.exists() or not list(journals.iterdir())


def test_import_learns_everything_once_and_resumes_after_a_kill(gateway, client, tmp_path, journals):
    notes = _notes(tmp_path / "notes.md", 600)
    clean, killed = f"clean-{tmp_path.name[-8:]}".lower(), f"killed-{tmp_path.name[-8:]}".lower()
    for name in (clean, killed):
        client.create_memory(name, CONFIG)

    done = _cli(gateway, str(notes), "--memory", clean, "--batch-size", "16")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "imported 600 items" in out

    # the same import into the twin, SIGKILLed once a few batches are acknowledged
    run = _cli(gateway, str(notes), "--memory", killed, "--batch-size", "16",
               env={"NMEM_IMPORT_JOURNAL_DIR": str(tmp_path / "killed-journals")}, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        saved = list((tmp_path / "killed-journals").glob("*.json"))
        if saved and json.loads(saved[0].read_text())["done_batches"] >= 3:
            break
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(30)
    partial = _stats(client, killed).total_observations
    assert 0 < partial < 600

    again = _cli(gateway, str(notes), "--memory", killed, "--batch-size", "16",
                 env={"NMEM_IMPORT_JOURNAL_DIR": str(tmp_path / "killed-journals")})
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resuming:" in out and "continuing at item" in out
    assert "imported 600 items" in out and "resumed after the first" in out, out
    a, b = _stats(client, clean), _stats(client, killed)
    assert a.total_observations == b.total_observations == 600
    assert a.weight_hash == b.weight_hash

    # a finished import run again learns nothing
    rerun = _cli(gateway, str(notes), "--memory", killed, "--batch-size", "16",
                 env={"NMEM_IMPORT_JOURNAL_DIR": str(tmp_path / "killed-journals")})
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0 and "already imported" in out
    assert _stats(client, killed).total_observations == 600

    # its journal lost: resent with the same request ids, nothing is learned twice, and it says so
    shutil.rmtree(tmp_path / "killed-journals")
    lost = _cli(gateway, str(notes), "--memory", killed, "--batch-size", "16",
                env={"NMEM_IMPORT_JOURNAL_DIR": str(tmp_path / "killed-journals")})
    out, err = lost.communicate(timeout=300)
    assert lost.returncode == 0 and "note: 600 of them the server had learned already" in out, out + err
    assert _stats(client, killed).total_observations == 600

    # --again learns the same files once more, each time it is given
    for _ in range(2):
        twice = _cli(gateway, str(notes), "--memory", killed, "--batch-size", "16", "--again",
                     env={"NMEM_IMPORT_JOURNAL_DIR": str(tmp_path / "killed-journals")})
        out, err = twice.communicate(timeout=300)
        assert twice.returncode == 0 and "imported 600 items" in out, err
    assert _stats(client, killed).total_observations == 1800

    # the same server by another URL is the same memory: nothing learned twice
    other_url = gateway.base_url.replace("127.0.0.1", "localhost")
    assert other_url != gateway.base_url
    by_name = subprocess.run([CLI, "import", str(notes), "--memory", killed, "--batch-size", "16",
                              "--url", other_url, "--api-key", gateway.key_a], capture_output=True, text=True,
                             env={**os.environ, "NMEM_IMPORT_JOURNAL_DIR": str(tmp_path / "killed-journals")})
    assert by_name.returncode == 0 and "already imported" in by_name.stdout, by_name.stderr
    # a memory created anew under the name is another memory: it learns the files
    client.delete_memory(killed)
    client.create_memory(killed, CONFIG)
    fresh = _cli(gateway, str(notes), "--memory", killed, "--batch-size", "16",
                 env={"NMEM_IMPORT_JOURNAL_DIR": str(tmp_path / "killed-journals")})
    out, err = fresh.communicate(timeout=300)
    assert fresh.returncode == 0 and "imported 600 items" in out, err
    assert _stats(client, killed).total_observations == 600


class _CrashAfter:
    """A client whose process 'dies' right after the server acknowledged the `n`th batch (before
    the journal could record it). Keyed on the batch's request id, not on a count of answers:
    with batches in flight the 5th answer's thread can count itself before the 4th's does."""

    def __init__(self, client: Client, n: int) -> None:
        self.client, self.fatal_suffix = client, f"-{n - 1:06d}"

    def observe(self, *args, **kwargs):
        result = self.client.observe(*args, **kwargs)
        if kwargs["request_id"].endswith(self.fatal_suffix):
            raise SystemExit("killed")
        return result


@pytest.mark.parametrize("in_flight", [1, 2])
def test_a_batch_applied_but_not_journaled_is_not_learned_twice(client, tmp_path, journals, fresh_name,
                                                                in_flight):
    client.create_memory(fresh_name, CONFIG)
    plan = plan_import([_notes(tmp_path / "n.md", 100)], ImportOptions(batch_size=10), memory=fresh_name)
    with pytest.raises(SystemExit):
        ImportRun(_CrashAfter(client, 4), fresh_name, plan, in_flight=in_flight).run()
    # the 4th batch was applied, not recorded (with two in flight, perhaps the 5th too)
    assert Journal.load(plan.key).done_batches == 3
    assert 40 <= _stats(client, fresh_name).total_observations <= 40 + 10 * (in_flight - 1)
    outcome = ImportRun(client, fresh_name, plan, in_flight=in_flight).run()  # resent with their ids
    assert _stats(client, fresh_name).total_observations == 100  # not re-applied, and said so:
    assert 10 <= outcome["repeated_items"] <= 10 * in_flight, outcome


def test_an_import_with_batches_in_flight_learns_what_one_at_a_time_learns(client, tmp_path, journals):
    notes = _notes(tmp_path / "notes.md", 120)
    hashes = {}
    for in_flight in (1, 3):
        name = f"flight{in_flight}-{tmp_path.name[-8:]}".lower()
        client.create_memory(name, CONFIG)
        plan = plan_import([notes], ImportOptions(batch_size=8), memory=name)
        ImportRun(client, name, plan, in_flight=in_flight).run()
        stats = _stats(client, name)
        assert stats.total_observations == 120
        hashes[in_flight] = stats.weight_hash
    assert hashes[1] == hashes[3]
    with pytest.raises(InvalidInput, match="in_flight"):
        ImportRun(client, "x", plan, in_flight=0)


class _SecondFailsThirdIsSlow:
    """The second batch is refused after 1 s; the third, sent meanwhile, takes 5 s."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def observe(self, *args, **kwargs):
        if kwargs["request_id"].endswith("-000001"):
            time.sleep(1)
            raise InvalidInput("refused for the test")
        if kwargs["request_id"].endswith("-000002"):
            time.sleep(5)
        return self.client.observe(*args, **kwargs)


def test_a_failed_batch_is_reported_without_waiting_for_the_ones_in_flight(client, tmp_path, journals, fresh_name):
    client.create_memory(fresh_name, CONFIG)
    plan = plan_import([_notes(tmp_path / "n.md", 40)], ImportOptions(batch_size=10), memory=fresh_name)
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="refused for the test"):
        ImportRun(_SecondFailsThirdIsSlow(client), fresh_name, plan, in_flight=2).run()
    assert time.monotonic() - started < 4
    assert Journal.load(plan.key).done_batches == 1


def test_an_unfinished_import_of_the_same_files_is_not_learned_over(gateway, client, tmp_path, journals,
                                                                     fresh_name):
    """Other options or changed files give other request ids: resuming under them would learn
    the acknowledged part twice, so the command asks for the original run or --again."""
    from neural_memory.importing import memory_created_at

    client.create_memory(fresh_name, CONFIG)
    notes = _notes(tmp_path / "n.md", 60)
    plan = plan_import([notes], ImportOptions(batch_size=10), memory=fresh_name)
    plan = plan.into(memory_created_at(client, fresh_name))
    with pytest.raises(SystemExit):
        ImportRun(_CrashAfter(client, 2), fresh_name, plan, in_flight=1).run()
    learned = _stats(client, fresh_name).total_observations
    assert learned == 20

    other_options = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "8")
    _, err = other_options.communicate(timeout=300)
    assert other_options.returncode == 1 and "--batch-size 10 (now 8)" in err and "learned at least 10 of 60" in err, err
    with notes.open("a") as more:
        more.write("\nOne more note, added after the crash.\n")
    changed = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "10")
    _, err = changed.communicate(timeout=300)
    assert changed.returncode == 1 and "changed since" in err and "--again" in err, err
    assert _stats(client, fresh_name).total_observations == learned  # nothing sent

    anyway = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "8", "--again")
    out, err = anyway.communicate(timeout=300)
    assert anyway.returncode == 0 and "imported 61 items" in out, err
    assert _stats(client, fresh_name).total_observations == learned + 61
    assert not Journal.load(plan.key).done_batches  # the superseded journal is gone
    # Finished, then run with another batch size (other request ids): refused as well.
    resized = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "5")
    _, err = resized.communicate(timeout=300)
    assert resized.returncode == 1 and "already imported" in err and "--batch-size 8 (now 5)" in err, err
    assert _stats(client, fresh_name).total_observations == learned + 61


def test_an_interrupted_run_with_again_is_finished_not_started_over(gateway, client, tmp_path, journals,
                                                                    fresh_name):
    """`--again` run once more after a crash finishes the interrupted run (its request ids), so
    what that run learned is not learned a third time; a plain run says what is unfinished."""
    from neural_memory.importing import memory_created_at

    client.create_memory(fresh_name, CONFIG)
    notes = _notes(tmp_path / "n.md", 60)
    first = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "10")
    assert first.wait(300) == 0
    plan = plan_import([notes], ImportOptions(batch_size=10), memory=fresh_name)
    plan = plan.into(memory_created_at(client, fresh_name))
    with pytest.raises(SystemExit):  # an --again run (a renewed plan) dies after its 2nd batch
        ImportRun(_CrashAfter(client, 2), fresh_name, plan.renewed(), in_flight=1).run()
    assert _stats(client, fresh_name).total_observations == 80

    plain = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "10")
    out, err = plain.communicate(timeout=300)
    assert plain.returncode == 0 and "already imported" in out and "at least 10 of 60 items" in out, (out, err)
    resumed = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "10", "--again")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "resuming: 10 of 60 items" in out, (out, err)
    assert _stats(client, fresh_name).total_observations == 120
    once_more = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "10", "--again")
    out, err = once_more.communicate(timeout=300)
    assert once_more.returncode == 0 and "resuming" not in out and "imported 60 items" in out, (out, err)
    assert _stats(client, fresh_name).total_observations == 180


def test_a_file_imported_with_others_is_refused_for_that_reason(gateway, client, tmp_path, journals, fresh_name):
    client.create_memory(fresh_name, CONFIG)
    one, two = _notes(tmp_path / "one.md", 5), _notes(tmp_path / "two.md", 7)
    both = _cli(gateway, str(one), str(two), "--memory", fresh_name)
    assert both.wait(300) == 0
    for files, reason in (([one], "in an import of one.md, two.md"), ([two, one], "in another order (one.md, two.md)")):
        again = _cli(gateway, *map(str, files), "--memory", fresh_name)
        _, err = again.communicate(timeout=300)
        assert again.returncode == 1 and reason in err and "changed since" not in err and "--again" in err, err
    assert _stats(client, fresh_name).total_observations == 12


def test_an_imports_lock_is_held_while_it_runs_and_its_file_removed_after(tmp_path, journals):
    """Lock files were left behind, one per import. A finished run now removes its file while
    it holds it, so a run that had opened that file just before must see that it locked a
    removed file (and take a new one), or two runs could both hold "the lock"."""
    import threading

    from errors import Busy
    from neural_memory.importing import _same_file

    with open(tmp_path / "gone.lock", "a+") as opened:
        assert _same_file(opened, tmp_path / "gone.lock")
        (tmp_path / "gone.lock").unlink()
        assert not _same_file(opened, tmp_path / "gone.lock")
        (tmp_path / "gone.lock").touch()  # a new file under the name is not the one locked
        assert not _same_file(opened, tmp_path / "gone.lock")

    entered, leave, results = threading.Event(), threading.Event(), []

    def run(name: str) -> None:
        try:
            with Journal.held("plan-key", "notes"):
                results.append(name)
                entered.set()
                leave.wait(10)
        except Busy:
            results.append(f"{name}: busy")

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert entered.wait(10)
    with pytest.raises(Busy):  # while held: refused
        with Journal.held("plan-key", "notes"):
            pass
    leave.set()
    first.join(10)
    with Journal.held("plan-key", "notes"):  # after: taken, on a file of its own
        assert list(journals.glob("*.lock"))
    assert results == ["first"] and not list(journals.glob("*.lock"))


def test_a_second_run_of_an_import_under_way_is_refused(gateway, client, tmp_path, journals, fresh_name):
    """Both runs wrote the one journal (one died on its temp file) and the second said it was
    "resuming" an import that was still running."""
    client.create_memory(fresh_name, CONFIG)
    notes = _notes(tmp_path / "notes.md", 3000)
    first = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "16", "--in-flight", "1", "--quiet")
    started = time.monotonic()
    while not list(journals.glob("*.json")):  # its first batch acknowledged
        assert first.poll() is None and time.monotonic() - started < 120, first.communicate()
        time.sleep(0.05)
    second = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "16", "--in-flight", "1")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 1 and "another run of this import" in err and "resuming" not in out, (out, err)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0 and "Traceback" not in err, (out, err)
    assert _stats(client, fresh_name).total_observations == 3000
    again = _cli(gateway, str(notes), "--memory", fresh_name, "--batch-size", "16", "--in-flight", "1")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "already imported" in out  # the lock went with the first run
    assert not list(journals.glob("*.lock"))  # and left no file behind


def test_the_same_bytes_read_in_another_format_are_another_import(gateway, client, tmp_path, journals, fresh_name):
    """A file's format is part of an import's key: JSONL lines first imported from a .txt (as
    one paragraph of raw JSON) and then from a .jsonl are two items, not "already imported"."""
    client.create_memory(fresh_name, CONFIG)
    lines = b'{"text": "The VPN needs a hardware key.", "domain": "it"}\n{"text": "Payroll runs on the 25th.", "domain": "hr"}\n'
    for name in ("export.txt", "export.jsonl"):
        (tmp_path / name).write_bytes(lines)
        run = _cli(gateway, str(tmp_path / name), "--memory", fresh_name)
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0 and "already imported" not in out, (out, err)
    stats = _stats(client, fresh_name)
    assert stats.total_observations == 3 and stats.domains == ["hr", "it"], stats


def test_empty_csv_cells_are_skipped_and_said(gateway, client, tmp_path, journals, fresh_name):
    """A mostly empty column imported 3 of 1,000 rows and said only "imported 3 items"."""
    rows = tmp_path / "crm.csv"
    rows.write_text("id,notes\n" + "".join(f"{i},{'called back' if i % 4 == 0 else ''}\n" for i in range(12)))
    run = _cli(gateway, str(rows), "--memory", fresh_name, "--create", "--column", "notes")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0 and "9 row(s) with an empty 'notes' cell skipped" in out, (out, err)
    assert _stats(client, fresh_name).total_observations == 3


def test_a_csv_option_for_no_csv_file_and_a_missing_key_are_named(gateway, tmp_path, journals, fresh_name):
    notes = _notes(tmp_path / "notes.md", 3)
    run = _cli(gateway, str(notes), "--memory", fresh_name, "--create", "--column", "body")
    _, err = run.communicate(timeout=300)
    assert run.returncode == 1 and "none of these files is CSV" in err, err
    keyless = subprocess.run([CLI, "import", str(notes), "--memory", fresh_name, "--url", gateway.base_url],
                             capture_output=True, text=True, timeout=300, env={**os.environ, "NMEM_API_KEY": ""})
    assert keyless.returncode == 1 and "set NMEM_API_KEY" in keyless.stderr and "--api-key" in keyless.stderr, \
        keyless.stderr


def test_a_long_text_is_measured_without_splitting_it_at_once(monkeypatch):
    """The length of a text with its whitespace collapsed, measured slice by slice (so a 50 MB
    line is refused without a list of its words), equals the collapsed text's; a long paragraph
    cut into sentences is not refused for its own length."""
    import random

    from neural_memory import importing

    monkeypatch.setattr(importing, "_COLLAPSE_SLICE", 7)
    rng = random.Random(3)
    for _ in range(2000):
        text = "".join(rng.choice(["a", "bc", " ", "  ", "\n", "\u3000", "xyz"]) for _ in range(rng.randint(0, 40)))
        assert importing._collapsed_length(text) == len(" ".join(text.split())), repr(text)
        # sentences cut before the whitespace is collapsed are the sentences cut after
        prose = "".join(rng.choice(["Aa", " b", ".", "!", " ", "\u3000", "\t", " 1", "(", "'"]) for _ in range(40))
        before = [p.strip() for p in importing._sentences(" ".join(prose.split())) if p.strip()]
        if before:
            assert [i.text for i in read_items(prose.encode(), "s.txt", ImportOptions(split="sentence"))] == before
    many = " ".join(f"Sentence {i} is short." for i in range(5000)).encode()  # ~115,000 characters
    assert len(read_items(many, "p.txt", ImportOptions(split="sentence"))) == 5000
    with pytest.raises(InvalidInput, match=r"p.txt:1 is 1\d{5} characters"):
        read_items(many, "p.txt", ImportOptions(split="paragraph"))


def test_a_mistyped_memory_or_server_is_named_as_such(tmp_path):
    """Not a lost connection, nor a 'prefix': the option the user got wrong."""
    for url in ("notaurl", "localhost:8000", "ftp://host", "http://"):
        with pytest.raises(InvalidInput, match="must look like http://HOST:PORT"):
            Client(url)
    notes = _notes(tmp_path / "n.md", 2)
    wrong = subprocess.run([CLI, "import", str(notes), "--memory", "Notes!", "--url", "http://127.0.0.1:9"],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and "--memory 'Notes!' is invalid" in wrong.stderr, wrong.stderr


def test_create_takes_the_new_memory_config(gateway, client, tmp_path, journals, fresh_name):
    notes = _notes(tmp_path / "n.md", 5)
    made = _cli(gateway, str(notes), "--memory", fresh_name, "--create", "--config", json.dumps(CONFIG), "--quiet")
    out, err = made.communicate(timeout=300)
    assert made.returncode == 0 and "imported 5 items" in out, err
    twin = fresh_name + "-twin"
    client.create_memory(twin, CONFIG)
    assert _stats(client, fresh_name).weight_parameters == _stats(client, twin).weight_parameters
    for bad, words in ((["--config", "{nope"], "not valid JSON"), (["--config", "[1]"], "JSON object"),
                       (["--config", "{}"], "add --create")):
        extra = bad if "add --create" in words else ["--create", *bad]
        refused = _cli(gateway, str(notes), "--memory", fresh_name + "-x", *extra)
        _, err = refused.communicate(timeout=300)
        assert refused.returncode == 1 and words in err, err
