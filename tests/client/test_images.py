"""Memory images end to end: export / import through the REST routes, refusals of bad files,
and push / pull through a real OCI registry (docker-registry) into a second server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

import errors as E

FACTS = [f"Fact {i}: the {w} project ships on day {i * 3} with {i + 2} reviewers."
         for i, w in enumerate(["apollo", "borealis", "cygnus", "draco", "eridanus", "fornax",
                                "gemini", "hydra", "indus", "lyra", "mensa", "norma"])]
PROMPTS = [f"When does the {w} project ship?" for w in
           ["apollo", "borealis", "cygnus", "draco", "eridanus", "fornax", "gemini", "hydra",
            "indus", "lyra"]] + [f"How many reviewers for {w}?" for w in
           ["mensa", "norma", "apollo", "draco", "lyra", "hydra", "cygnus", "gemini", "fornax",
            "indus"]]


def _answers(client, name: str) -> list[tuple]:
    out = []
    for prompt in PROMPTS:
        r = client.infer(name, prompt, top_k=3)
        out.append((r.response, round(r.confidence, 6),
                    [(a.pattern, round(a.weight, 6)) for a in r.attention_weights]))
    return out


def _trained(client, name: str, encoder: str = "hash") -> str:
    client.create_memory(name, {"encoder": encoder})
    for fact in FACTS:
        client.observe(name, fact, domain="projects")
    return client.stats(name).weight_hash


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("neural-memory")
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_export_then_import_is_the_same_memory(nm, fresh_name, tmp_path):
    from neural_memory import image

    trained = _trained(nm, fresh_name)
    nm.checkpoint(fresh_name, "v1")
    nm.observe(fresh_name, "A later fact, not in v1.")
    header = nm.export(fresh_name, tmp_path / "v1.nmem", tag="v1")
    live = nm.export(fresh_name, tmp_path / "live.nmem")
    assert (header.weight_hash, header.step, header.tag, header.encoder) == (trained, 12, "v1", "hash")
    assert live.weight_hash == nm.stats(fresh_name).weight_hash != trained and live.step == 13
    assert image.read_file(tmp_path / "v1.nmem").header.part_names() == ["checkpoint"]
    assert (tmp_path / "live.nmem").stat().st_mode & 0o777 == 0o600  # it holds every text: owner only

    copy = f"{fresh_name}-copy"
    result = nm.import_image(tmp_path / "v1.nmem", copy)
    try:
        assert (result.weight_hash, result.step, result.source) == (trained, 12, f"{fresh_name}@v1")
        nm.restore(fresh_name, "v1")
        assert _answers(nm, copy) == _answers(nm, fresh_name)
        assert nm.stats(copy).total_observations == 12
        with pytest.raises(E.MemoryExists):
            nm.import_image(tmp_path / "v1.nmem", copy)
    finally:
        nm.delete_memory(copy)
        nm.delete_memory(fresh_name)


def test_export_to_a_folder_or_a_path_that_cannot_be_written(nm, gateway, fresh_name, tmp_path):
    nm.create_memory(fresh_name, {"encoder": "hash"})
    nm.observe(fresh_name, FACTS[0])
    server = ["--url", gateway.base_url, "--api-key", gateway.key_a]
    into_folder = _cli("export", fresh_name, "-o", str(tmp_path), *server)  # the file goes inside it
    assert into_folder.returncode == 0, into_folder.stderr
    assert (tmp_path / f"{fresh_name}.nmem").is_file()
    nowhere = tmp_path / "missing" / "x.nmem"
    refused = _cli("export", fresh_name, "-o", str(nowhere), *server)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"cannot write image {nowhere}" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{fresh_name}.nmem"]  # no .partial left
    nm.delete_memory(fresh_name)


@pytest.fixture(scope="module")
def good_image(gateway, tmp_path_factory) -> bytes:
    from neural_memory import Client

    path = tmp_path_factory.mktemp("img") / "good.nmem"
    with Client(gateway.base_url, api_key=gateway.key_a, timeout=120) as nm:
        nm.create_memory("img-source", {"encoder": "hash"})
        nm.observe("img-source", "one fact to carry")
        nm.export("img-source", path)
        nm.delete_memory("img-source")
    return path.read_bytes()


def _reencode(data: bytes, **changes) -> bytes:
    from neural_memory import image

    img = image.decode(data)
    header = img.header.model_copy(update=changes)
    return b"".join(image.encode(header, img.parts))


def _bad_images(good: bytes) -> dict[str, tuple[bytes, str]]:
    flipped = bytearray(good)
    flipped[-10] ^= 0xFF
    version_2 = bytearray(good)
    version_2[9] = 2
    return {
        "foreign": (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "not a neural-memory image"),
        "text": (b"hello, I am a text file\n", "not a neural-memory image"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "corrupt": (bytes(flipped), "corrupt"),
        "trailing": (good + b"extra", "unexpected bytes"),
        "version": (bytes(version_2), "format version 2"),
        "header_version": (_reencode(good, format_version=2), "header says format version 2, its binary prefix 1"),
        # a damaged field name: the message names the field the header lacks
        "header_field": (good.replace(b'"weight_hash"', b'"weight_hasX"', 1), "unreadable header: weight_hash"),
        # what an import shows of the header: a terminal escape, a screenful
        "header_name": (_reencode(good, name="evil\x1b[2J\x1b[31mFAKE"), "unreadable header: name"),
        "header_tag": (_reencode(good, tag="t" * 500), "unreadable header: tag: must be one line of 1-200"),
        "header_bidi": (_reencode(good, name="fx\u202egpj.exe"), "unreadable header: name: must be one line"),
    }


@pytest.mark.parametrize("kind", ["foreign", "text", "truncated", "corrupt", "trailing", "version", "header_version",
                                  "header_field", "header_name", "header_tag", "header_bidi"])
def test_bad_files_are_refused_by_client_and_server(nm, gateway, good_image, kind, tmp_path):
    data, reason = _bad_images(good_image)[kind]
    expected = E.IncompatibleState if kind == "version" else E.InvalidInput
    path = tmp_path / "bad.nmem"
    path.write_bytes(data)
    with pytest.raises(expected, match=reason):  # the client checks before uploading...
        nm.import_image(path, "never-created")
    raw = httpx.put(f"{gateway.base_url}/v1/memories/never-created/image", content=data,
                    headers=gateway.headers(), timeout=60)  # ...and so does the server
    assert raw.status_code == (422 if kind == "version" else 400)
    assert reason in raw.json()["error"]["message"]
    with pytest.raises(E.MemoryNotFound):
        nm.stats("never-created")


def test_an_encoder_this_server_does_not_know_is_refused(nm, good_image):
    from neural_memory import image

    config = image.decode(good_image).header.config
    alien = _reencode(good_image, config={**config, "encoder": "word2vec"}, encoder="word2vec")
    with pytest.raises(E.IncompatibleState, match="cannot run the image's memory.*encoder"):
        nm.import_image(alien, "alien-memory")
    with pytest.raises(E.MemoryNotFound):
        nm.stats("alien-memory")


def test_a_wrong_weight_hash_is_caught_on_import(nm, good_image):
    lying = _reencode(good_image, weight_hash="0" * 64)
    with pytest.raises(E.IncompatibleState, match="hash"):
        nm.import_image(lying, "lying-memory")
    with pytest.raises(E.MemoryNotFound):
        nm.stats("lying-memory")


def _with_numbers_changed(good_image: bytes, change) -> bytes:
    """`good_image` with `change(network)` applied to its weights, its header and hashes made
    consistent again: only the numbers are wrong."""
    from memory import NeuralMemory
    from neural_memory import image

    img = image.decode(good_image)
    (name, blob), = img.parts.items()
    state = NeuralMemory.from_bytes(blob)
    with torch.no_grad():
        change(state.net)
    state._hash = None  # the weights changed under it
    blob = state.to_bytes()
    header = image.new_header(name=img.header.name, tag=None, config=img.header.config,
                              weight_hash=state.weight_hash, step=state.step, parts=[(name, blob)])
    return b"".join(image.encode(header, {name: blob}))


def test_an_image_whose_weights_hold_nan_is_refused(nm, good_image, fresh_name):
    """A NaN weight: the memory made from it could neither learn (every write refused as
    diverging) nor answer (null scores)."""
    nan = _with_numbers_changed(good_image, lambda net: net.params[0].view(-1).__setitem__(0, float("nan")))
    with pytest.raises(E.IncompatibleState, match="NaN or infinite.*head/w0"):
        nm.import_image(nan, fresh_name)
    with pytest.raises(E.MemoryNotFound):
        nm.stats(fresh_name)


@pytest.mark.parametrize("change", [
    lambda net: [p.mul_(1e25) for p in net.params],
    lambda net: net.params[0].view(-1).__setitem__(0, 1e30),
    lambda net: [m.add_(1e20) for m in net.momentum],
], ids=["all-weights", "one-weight", "momentum"])
def test_an_image_whose_finite_weights_overflow_is_refused(nm, good_image, fresh_name, change):
    """Weights that are finite but so large that a step overflows: once imported, and then every
    write was refused as diverging."""
    with pytest.raises(E.IncompatibleState, match="too large: a learning step overflows"):
        nm.import_image(_with_numbers_changed(good_image, change), fresh_name)
    with pytest.raises(E.MemoryNotFound):
        nm.stats(fresh_name)


def test_an_image_with_large_weights_that_still_learn_imports(nm, good_image, fresh_name):
    scaled = _with_numbers_changed(good_image, lambda net: [p.mul_(1e3) for p in net.params])
    nm.import_image(scaled, fresh_name)
    assert nm.observe(fresh_name, "it still learns").step >= 1


_HEADER_LIES = {  # what is rewritten in the header -> what the refusal must name
    "encoder": (lambda h: {"config": {**h.config, "encoder": "minilm"}, "encoder": "minilm"},
                r"config\.encoder is 'minilm', the checkpoint's is 'hash'"),
    "header-encoder": (lambda h: {"encoder": "minilm"}, r"carries: encoder is 'minilm', the checkpoint's is 'hash'"),
    "memory_width": (lambda h: {"config": {**h.config, "memory_width": 512}}, r"config\.memory_width is 512"),
    "lr": (lambda h: {"config": {**h.config, "lr": 0.5}}, r"config\.lr is 0\.5"),
    "seed": (lambda h: {"config": {**h.config, "seed": 7}}, r"config\.seed is 7"),
    "dtype": (lambda h: {"config": {**h.config, "dtype": "float64"}}, r"config\.dtype is 'float64'"),
    "empty-config": (lambda h: {"config": {}}, r"config\.encoder is 'minilm', the checkpoint's is 'hash'"),
    "step": (lambda h: {"step": 999}, r"step is 999, the checkpoint's is 1"),
    "huge-step": (lambda h: {"step": 10**30}, r"step is 10000000000+, the checkpoint's is 1"),
}


@pytest.mark.parametrize("lie", list(_HEADER_LIES))
def test_a_header_that_disagrees_with_its_checkpoint_is_refused(nm, gateway, good_image, fresh_name, lie):
    from neural_memory import image

    change, reason = _HEADER_LIES[lie]
    header = image.decode(good_image).header
    assert header.step == 1 and header.encoder == header.config["encoder"] == "hash"
    lying = _reencode(good_image, **change(header))
    with pytest.raises(E.IncompatibleState, match=reason):
        nm.import_image(lying, fresh_name)
    raw = httpx.put(f"{gateway.base_url}/v1/memories/{fresh_name}/image", content=lying,
                    headers=gateway.headers(), timeout=120)
    assert raw.status_code == 422
    error = raw.json()["error"]
    assert error["code"] == "incompatible_state"
    assert "does not match the checkpoint it carries" in error["message"]
    with pytest.raises(E.MemoryNotFound):  # nothing left behind: no memory, no objects
        nm.stats(fresh_name)
    assert [p for p in gateway.data_dir.rglob("*") if fresh_name in p.name] == []


def test_upload_over_the_image_limit_is_413(gateway, gateway_b):
    from neural_memory.image import MEDIA_TYPE

    from tests.client.conftest import GATEWAY_B_MAX_IMAGE_BYTES as LIMIT

    url = f"{gateway_b.base_url}/v1/memories/huge/image"
    headers = {**gateway_b.headers(), "content-type": MEDIA_TYPE}
    chunk = b"x" * (1 << 20)

    def streamed():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(LIMIT // len(chunk) + 2):
            yield chunk

    for body in (chunk * (LIMIT // len(chunk) + 1), streamed()):
        response = httpx.put(url, content=body, headers=headers, timeout=60)
        assert response.status_code == 413
        assert f"{LIMIT}-byte limit" in response.json()["error"]["message"]
        assert "NMEM_MAX_IMAGE_BYTES" in response.json()["error"]["message"]
    small = httpx.post(f"{gateway.base_url}/v1/memories", content=b"x" * 2_000_000,
                       headers={**gateway.headers(), "content-type": "application/json"}, timeout=60)
    assert small.status_code == 413  # other routes keep the 1 MB JSON limit


# ---- registries ----------------------------------------------------------------------------


def test_push_then_pull_into_another_server(nm, nm_b, gateway, gateway_b, oci_registry, fresh_name):
    trained = _trained(nm, fresh_name)
    nm.checkpoint(fresh_name, "release")
    expected = _answers(nm, fresh_name)
    ref = oci_registry.ref(f"memories/{fresh_name}", "v1")
    server_a = ["--url", gateway.base_url, "--api-key", gateway.key_a]
    pushed = _cli("push", f"{fresh_name}@release", ref, *server_a)
    assert pushed.returncode == 0, pushed.stderr
    assert f"pushed {fresh_name}@release to {ref} (sha256:" in pushed.stdout

    server_b = ["--url", gateway_b.base_url, "--api-key", gateway_b.key_a]
    pulled = _cli("pull", ref, "--as", "imported", *server_b)
    assert pulled.returncode == 0, pulled.stderr
    try:
        assert nm_b.stats("imported").weight_hash == trained
        assert _answers(nm_b, "imported") == expected
        with pytest.raises(E.MemoryNotFound):  # server B's data dir never held the source
            nm_b.stats(fresh_name)
    finally:
        nm_b.delete_memory("imported")
        nm.delete_memory(fresh_name)


def test_registry_with_auth_uses_flags_or_the_docker_config(nm, gateway, oci_registry_auth,
                                                           fresh_name, tmp_path):
    trained = _trained(nm, fresh_name)
    reg = oci_registry_auth
    ref = reg.ref("memories/secret", "v1")
    server = ["--url", gateway.base_url, "--api-key", gateway.key_a]
    home = {"HOME": str(tmp_path)}  # no ~/.docker/config.json of the machine's user

    refused = _cli("push", fresh_name, ref, *server, env=home)
    assert refused.returncode == 1 and "needs a username and password" in refused.stderr
    wrong = _cli("push", fresh_name, ref, *server, "--username", reg.username,
                 "--password", "wrong", env=home)
    assert wrong.returncode == 1 and "refused the credentials" in wrong.stderr

    ok = _cli("push", fresh_name, ref, *server, "--username", reg.username,
              "--password", reg.password, env=home)
    assert ok.returncode == 0, ok.stderr

    docker = tmp_path / ".docker"
    docker.mkdir()
    token = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    pulled = _cli("pull", ref, "--as", f"{fresh_name}-pulled", *server, env=home)
    assert pulled.returncode == 0, pulled.stderr
    try:
        assert nm.stats(f"{fresh_name}-pulled").weight_hash == trained
    finally:
        nm.delete_memory(f"{fresh_name}-pulled")
        nm.delete_memory(fresh_name)


def test_pull_refuses_what_is_not_a_memory_image(nm, gateway, oci_registry, tmp_path):
    import oras.client

    other = tmp_path / "notes.txt"
    other.write_text("just a text artifact")
    ref = oci_registry.ref("other/artifact", "v1")
    oras.client.OrasClient(insecure=True).push(target=ref, files=[str(other)],
                                               disable_path_validation=True)
    server = ["--url", gateway.base_url, "--api-key", gateway.key_a]
    refused = _cli("pull", ref, "--as", "not-an-image", *server)
    assert refused.returncode == 1 and "is not a neural-memory image" in refused.stderr
    missing = _cli("pull", oci_registry.ref("other/artifact", "nope"), "--as", "x", *server)
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr  # said once, not also by oras
    with pytest.raises(E.MemoryNotFound):
        nm.stats("not-an-image")
