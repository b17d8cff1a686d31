import pytest

from bench.corpus import docstring_sentences
from bench.seed_suite import Embeddings


@pytest.fixture(scope="session")
def emb():
    """One MiniLM encoder and embedding cache for all memory tests: each sentence encoded once."""
    return Embeddings("minilm")


@pytest.fixture(scope="session")
def corpus():
    return list(docstring_sentences())
