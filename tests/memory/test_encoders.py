"""The MiniLM encoders on ONNX Runtime: the torch model's vectors, batching that changes
nothing, and an export cache that survives corruption and concurrent first use."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory import get_encoder
from memory import encoder_export as export
from memory.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers' torch model on the packaged weights: what `minilm` must equal."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(export.model_dir()), device="cpu")
    return lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True)


def test_minilm_gives_the_torch_models_vectors_on_real_text(corpus, reference):
    texts = corpus[:300] + ["", "Ok", "word " * 400]  # empty, tiny, cut at the token limit
    cosines = (get_encoder("minilm").encode(texts) * reference(texts)).sum(1)
    assert cosines.min() >= 0.999, f"worst cosine {cosines.min():.6f} at {texts[cosines.argmin()]!r}"


def test_batched_equals_one_by_one_in_the_callers_order(corpus):
    encoder = get_encoder("minilm")
    texts = corpus[:40] + ["word " * 300, "Short."]  # lengths from 3 to 256 tokens
    batched = encoder.encode(texts)
    alone = np.stack([encoder.encode([text])[0] for text in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(texts[::-1]), batched[::-1], atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_int8_is_a_separate_encoder_close_to_minilm(corpus):
    texts = corpus[:100]
    full, int8 = get_encoder("minilm").encode(texts), get_encoder("minilm-int8").encode(texts)
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    cosines = (full * int8).sum(1)
    assert 0.97 < cosines.mean() < 0.9999  # close, but other vectors: hence its own name
    alone = np.stack([get_encoder("minilm-int8").encode([text])[0] for text in texts[:20]])
    np.testing.assert_allclose(int8[:20], alone, atol=1e-5)  # a text's vector ignores its batch


@pytest.mark.parametrize("name", ["minilm", "hash"])
def test_a_text_in_other_unicode_code_points_reads_the_same(name):
    """A copy of a held text with its accents decomposed, or fullwidth digits, scored as new:
    surprise said "learn" for what forget takes as the same words."""
    import unicodedata

    encoder = get_encoder(name)
    text = "Zoë's café flight 2231 departs 07:45"
    variants = [unicodedata.normalize("NFD", text), "Zoë's café flight ２２３１ departs ０７:４５"]
    vectors = encoder.encode([text, *variants])
    assert np.array_equal(vectors[0], vectors[1]) and np.array_equal(vectors[0], vectors[2])


def test_unknown_encoder_name_is_a_clear_error():
    with pytest.raises(InvalidInput, match="unknown encoder 'minilm-fp16'.*'minilm', 'minilm-int8'"):
        get_encoder("minilm-fp16")


def _encode_in_fresh_process(cache: Path, texts: list[str]) -> subprocess.Popen:
    script = ("import json, logging, sys; logging.basicConfig(level=logging.INFO); "
              "from memory import get_encoder; from memory.encoder_export import use_cache_dir; "
              "use_cache_dir(sys.argv[2]); "
              "print(json.dumps(get_encoder('minilm').encode(json.loads(sys.argv[1])).tolist()))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", script, json.dumps(texts), str(cache)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_racing_on_first_use_export_once(tmp_path):
    texts = ["Redis is an in-memory database", "Short."]
    racers = [_encode_in_fresh_process(tmp_path, texts) for _ in range(2)]
    outputs = [racer.communicate(timeout=300) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], [err[-2000:] for _, err in outputs]
    exports = sum(err.count("exported minilm-fp32") for _, err in outputs)
    assert exports == 1, [err[-2000:] for _, err in outputs]  # the loser of the lock waited
    vectors = [np.array(json.loads(out)) for out, _ in outputs]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    np.testing.assert_allclose(vectors[0], get_encoder("minilm").encode(texts), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".onnx") == [
        f"minilm-fp32-{export.cache_key()}.onnx"]  # no temp file left behind


def test_a_corrupt_cache_file_is_rebuilt(tmp_path, monkeypatch, caplog):
    get_encoder("minilm")  # the default cache holds a good file: copy its first half
    source = export.cache_path("fp32")
    monkeypatch.setattr(export, "_chosen_cache_dir", tmp_path)
    good, size = export.cache_path("fp32"), source.stat().st_size
    with open(source, "rb") as src, open(good, "wb") as dst:  # as a crash mid-copy leaves it
        dst.write(src.read(size // 2))
    session = export.new_session("fp32", threads=1)
    assert "does not load" in caplog.text and good.stat().st_size == size
    ids, mask = (t.numpy() for t in export._tokens(["Redis is an in-memory database"]))
    got = session.run([export.OUTPUT], dict(zip(export.INPUTS, (ids, mask))))[0]
    np.testing.assert_allclose(got, get_encoder("minilm").encode(["Redis is an in-memory database"]),
                               atol=1e-5)


def test_unwritable_cache_exports_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setattr(export, "_chosen_cache_dir", blocker / "cache")
    model = export._cached_model("fp32")
    assert isinstance(model, bytes) and len(model) > 80_000_000
