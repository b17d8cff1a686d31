"""Pure parts: the checkpoint frame, WAL entry encoding, key layout and settings validation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from errors import CheckpointCorrupt, InvalidInput
from storage import Keys, StorageSettings, check_name, object_key
from storage.codec import HEADER_SIZE, decode_wal_entry, encode_wal_entry, frame, unframe


def test_frame_round_trip() -> None:
    payload = bytes(range(256)) * 3
    framed, sha = frame(payload)
    assert sha == hashlib.sha256(payload).hexdigest()
    assert len(framed) == HEADER_SIZE + len(payload)
    assert unframe(framed, "k") == (payload, sha)


def test_every_single_byte_flip_is_detected() -> None:
    framed, _ = frame(b"a small but real checkpoint payload")
    for position in range(len(framed)):
        for bit in (0x01, 0x80):
            corrupted = bytearray(framed)
            corrupted[position] ^= bit
            with pytest.raises(CheckpointCorrupt):
                unframe(bytes(corrupted), f"flip@{position}")


def test_every_truncation_and_padding_is_detected() -> None:
    framed, _ = frame(b"payload" * 10)
    for length in range(len(framed)):
        with pytest.raises(CheckpointCorrupt):
            unframe(framed[:length], f"cut@{length}")
    with pytest.raises(CheckpointCorrupt):
        unframe(framed + b"\x00", "padded")


def test_frame_refuses_non_bytes() -> None:
    with pytest.raises(InvalidInput):
        frame("text")  # type: ignore[arg-type]


def test_wal_entry_encoding_round_trips() -> None:
    entry = {"step": 7, "vectors": b"\x00\x01", "texts": ["a", "é"], "domain": "d", "options": {"lr": 0.5, "k": [1]}}
    fields = encode_wal_entry(entry)
    assert fields["step"] == b"7"
    assert decode_wal_entry({k.encode(): v for k, v in fields.items()}) == entry
    minimal = decode_wal_entry({k.encode(): v for k, v in encode_wal_entry({"step": 0, "vectors": b""}).items()})
    assert minimal == {"step": 0, "vectors": b"", "texts": [], "domain": None, "options": {}}


def test_key_layout_and_names() -> None:
    keys = Keys("nm")
    assert keys.registry() == "nm:registry"
    assert keys.wal("acme/notes") == "nm:mem:acme/notes:wal"
    per_memory = keys.memory_keys("acme/notes")
    assert len(set(per_memory)) == len(per_memory) >= 6  # distinct, and all in the memory's own space
    assert all(key.startswith("nm:mem:acme/notes:") for key in per_memory)
    assert not set(per_memory) & set(keys.memory_keys("acme/notes2"))
    assert object_key("acme/notes", "v1") == "acme/notes/v1.ckpt"
    assert check_name("user@example.com/notes.v2") == "user@example.com/notes.v2"
    for bad_tag in ("", "../x", "a/b", " v1", "v" * 129):
        with pytest.raises(InvalidInput):
            object_key("acme/notes", bad_tag)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NMEM_REDIS_URL", "redis://db:6379/2")
    monkeypatch.setenv("NMEM_S3_ENDPOINT", "http://minio:9000/")
    monkeypatch.setenv("NMEM_S3_BUCKET", "memories")
    monkeypatch.setenv("NMEM_S3_SECRET_KEY", "topsecret")
    monkeypatch.setenv("NMEM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NMEM_API_KEYS", "k:tenant")  # someone else's setting: ignored here
    settings = StorageSettings()
    assert settings.redis_url == "redis://db:6379/2"
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.s3_bucket == "memories"
    assert settings.data_dir == tmp_path and settings.checkpoint_dir == tmp_path / "checkpoints"
    assert not settings.embedded_redis
    assert "topsecret" not in repr(settings)


def test_blank_urls_mean_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NMEM_REDIS_URL", "")
    monkeypatch.setenv("NMEM_S3_ENDPOINT", " ")
    settings = StorageSettings()
    assert settings.redis_url is None and settings.s3_endpoint is None and settings.embedded_redis


@pytest.mark.parametrize(
    ("field", "value", "hint"),
    [
        ("redis_url", "localhost:6379", "redis://"),
        ("s3_endpoint", "minio:9000", "http://"),
        ("s3_bucket", "ab", "3-63"),
        ("s3_bucket", "Has_Upper", "lowercase"),
        ("redis_prefix", "a:b", "NMEM_REDIS_PREFIX"),
        ("s3_prefix", "../up", "NMEM_S3_PREFIX"),
        ("s3_part_size", 1024, "greater than or equal"),
    ],
)
def test_bad_settings_say_what_to_fix(field: str, value: object, hint: str) -> None:
    with pytest.raises(ValidationError, match=hint):
        StorageSettings(**{field: value})
