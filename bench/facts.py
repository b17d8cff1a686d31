"""The scale benchmark's corpus: short real facts (PyPI package summaries), each with a cue that
says the same thing in other words, and the MiniLM vectors of both, cached on disk.

Provenance: `summary` column of a PyPI package index snapshot (one row per project, taken in
2026; 886k projects), filtered to distinct English one-line summaries of 30-160 characters and
5-30 words, shuffled with a fixed seed. Package names are not included (many summaries repeat
them; the fact is the sentence). Built once with `python -m bench.facts build --pypi PATH`
(needs Debian's `wordnet-base` for the cues) and committed as `bench/data/pypi_facts.tsv.xz`;
the benchmark reads only that file.

Cues, without an LLM: a keyword query a person might type for the fact. Stopwords go; about
half of the content words are replaced by a WordNet synonym of their most frequent sense
(e.g. "fast" -> "quick", "creating" -> "make", "library" -> "depository"), the others are
reduced to their base form ("vectors" -> "vector"); about one in six content words is dropped;
the rest are shuffled and, half the time, wrapped in a question template ("which package does
... ?"). A cue shares at most 60% of its words with its fact (more substitutions are applied
until it does). This makes cues differently worded than their facts but about the same thing;
WordNet's first sense is sometimes the wrong sense for technical words, which makes some cues
hard for every method alike (exact nearest-neighbour search is measured on the same cues).

Vectors: `python -m bench.facts embed [--limit N]` encodes the facts and the evaluated cues
(the oldest 1,000 and a fixed uniform 1,000 of each size) with MiniLM into
`bench/results/.facts-minilm.npz` (float16, ~80 MB, ignored by git: too large to commit;
~15 min on 2 idle cores, 40 on a busy shared machine). The cache records the corpus file's sha256 and is refused if the
corpus changed.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import random
import re
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

DATA_FILE = Path(__file__).with_name("data") / "pypi_facts.tsv.xz"
CACHE_FILE = Path(__file__).with_name("results") / ".facts-minilm.npz"
FACTS = 100_000  # observed, in this order (the first ones are "the oldest")
UNSEEN = 2_000  # never observed: negatives for seen-vs-unseen AUROC

STOPWORDS = frozenset("""a an the and or but if then else of to in on at by for with from into onto
upon about as is are was were be been being it its this that these those your you we our us they
their them he she his her i my me not no nor so than too very can will just do does did done has
have had having which who whom whose what when where why how all any both each few more most other
some such only own same also via using use used based python package packages yet another""".split())
TEMPLATES = ["{}", "{}", "which package does {}?", "looking for {}", "something for {}",
             "is there a {}", "{} please", "need {}"]


# ---- building (dev machine only) -------------------------------------------------------------
def _summaries(pypi_tsv: Path):
    with pypi_tsv.open(encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        col = header.index("summary")
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            if len(fields) > col:
                yield " ".join(fields[col].split())


def _usable(text: str) -> bool:
    words = text.split()
    if not (30 <= len(text) <= 160 and 5 <= len(words) <= 30) or not text.isascii():
        return False
    letters = sum(c.isalpha() for c in text)
    return letters >= 0.7 * len(text) and not re.search(r"https?://|\bTODO\b|description", text, re.I)


class WordNet:
    """Most-frequent-sense synonyms from WordNet 3.0's database files (Debian `wordnet-base`)."""

    POS = ("noun", "verb", "adj", "adv")

    def __init__(self, root: Path = Path("/usr/share/wordnet")):
        self.root = root
        self.index: dict[str, list[tuple[int, str, int]]] = {}  # lemma -> (tagged senses, pos, offset)
        self.exceptions: dict[str, str] = {}
        for pos in self.POS:
            for line in (root / f"index.{pos}").read_text().splitlines():
                if line.startswith(" "):
                    continue
                parts = line.split()
                p_cnt = int(parts[3])
                tagged, offsets = int(parts[5 + p_cnt]), parts[6 + p_cnt :]
                self.index.setdefault(parts[0], []).append((tagged, pos, int(offsets[0])))
            for line in (root / f"{pos}.exc").read_text().splitlines():
                inflected, base = line.split()[:2]
                self.exceptions.setdefault(inflected, base)
        for senses in self.index.values():
            senses.sort(key=lambda s: -s[0])
        self._data = {pos: (root / f"data.{pos}").read_bytes() for pos in self.POS}

    def base(self, word: str) -> str:
        if word in self.exceptions:
            return self.exceptions[word]
        if word in self.index:
            return word
        for suffix, repl in (("ies", "y"), ("es", ""), ("s", ""), ("ing", ""), ("ing", "e"),
                             ("ed", ""), ("ed", "e"), ("er", ""), ("est", "")):
            if word.endswith(suffix) and word[: -len(suffix)] + repl in self.index:
                return word[: -len(suffix)] + repl
        return word

    def synonyms(self, word: str) -> list[str]:
        senses = self.index.get(word)
        if not senses:
            return []
        _, pos, offset = senses[0]
        data = self._data[pos]
        line = data[offset : data.index(b"\n", offset)].decode()
        fields = line.split()
        count = int(fields[3], 16)
        lemmas = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]).replace("_", " ").lower() for i in range(count)]
        return [l for l in lemmas if word not in l and l not in word]


def make_cue(fact: str, wordnet: WordNet, rng: random.Random) -> str:
    fact_words = re.findall(r"[A-Za-z][A-Za-z0-9+#.-]*[A-Za-z0-9+#]|[A-Za-z]", fact)
    lowered = {w.lower() for w in fact_words}
    content = [w for w in dict.fromkeys(fact_words) if w.lower() not in STOPWORDS]
    if len(content) > 3:
        content = [w for w in content if rng.random() > 1 / 6] or content
    # Only plain lower-case words are reworded: names (Excel, J, PRNG) keep their spelling.
    wordy = [w.isalpha() and w.islower() and len(w) >= 3 for w in content]
    words = [wordnet.base(w) if ok else w.lower() for w, ok in zip(content, wordy)]
    for i in rng.sample(range(len(words)), len(words)):
        if wordy[i] and rng.random() < 0.5 or wordy[i] and _overlap(words, lowered) > 0.6:
            synonyms = wordnet.synonyms(wordnet.base(content[i]))
            words[i] = rng.choice(synonyms) if synonyms else words[i]
    rng.shuffle(words)
    return rng.choice(TEMPLATES).format(" ".join(words)) if words else fact.lower()


def _overlap(words: list[str], fact_words: set[str]) -> float:
    tokens = " ".join(words).split()
    return sum(t in fact_words for t in tokens) / max(1, len(tokens))


def build(pypi_tsv: Path, seed: int = 20260) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for text in _summaries(pypi_tsv):
        if _usable(text):
            seen.setdefault(re.sub(r"[^a-z0-9]+", " ", text.lower()).strip(), text)
    facts = sorted(seen.values())
    rng = random.Random(seed)
    rng.shuffle(facts)
    wordnet = WordNet()
    facts = facts[: FACTS + UNSEEN]
    return [(fact, make_cue(fact, wordnet, random.Random(f"{seed}:{i}"))) for i, fact in enumerate(facts)]


# ---- reading (the benchmark) -------------------------------------------------------------------
@lru_cache(maxsize=1)
def load() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(facts, cues), in observation order; the last UNSEEN facts are never observed."""
    rows = lzma.decompress(DATA_FILE.read_bytes()).decode("utf-8").splitlines()[1:]
    facts, cues = zip(*(row.split("\t") for row in rows))
    return facts, cues


def corpus_sha256() -> str:
    return hashlib.sha256(DATA_FILE.read_bytes()).hexdigest()


SAMPLE = 1_000  # facts whose cues are evaluated per size: the oldest, and a uniform sample


def uniform_sample(n: int) -> np.ndarray:
    """SAMPLE fact indices drawn uniformly from the first n (the same in every run)."""
    return np.sort(np.random.default_rng(n).choice(n, min(SAMPLE, n), replace=False))


def cue_ids(sizes=(1_000, 10_000, 100_000)) -> list[int]:
    ids = set(range(SAMPLE))
    for n in sizes:
        ids.update(uniform_sample(n).tolist())
    return sorted(ids)


def embed(limit: int | None = None, batch: int = 128) -> None:
    """Encode the first `limit` facts, the unseen ones and the evaluated cues; write CACHE_FILE."""
    from memory import get_encoder

    facts, cues = load()
    fact_ids = list(range(min(limit or FACTS, FACTS))) + list(range(FACTS, FACTS + UNSEEN))
    cue_list = [i for i in cue_ids() if i < (limit or FACTS)]
    encoder = get_encoder("minilm")
    texts = [facts[i] for i in fact_ids] + [cues[i] for i in cue_list]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding per batch
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float16)
    start = time.perf_counter()
    for at in range(0, len(order), batch):
        rows = order[at : at + batch]
        vectors[rows] = encoder.encode([texts[i] for i in rows])
        if at // batch % 50 == 0:
            print(f"{at}/{len(order)} in {time.perf_counter() - start:.0f}s", flush=True)
    n = len(fact_ids)
    CACHE_FILE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE_FILE, fact_ids=np.array(fact_ids), facts=vectors[:n], cue_ids=np.array(cue_list),
             cues=vectors[n:], corpus_sha256=np.array(corpus_sha256()))
    print(f"wrote {CACHE_FILE} ({n} facts, {len(cue_list)} cues) in {time.perf_counter() - start:.0f}s")


class Vectors:
    """Cached MiniLM vectors (float32, unit) of facts and cues by corpus index."""

    def __init__(self, path: Path = CACHE_FILE):
        if not path.exists():
            raise SystemExit(f"{path} is missing: build it once with `python -m bench.facts embed`")
        with np.load(path) as data:
            if str(data["corpus_sha256"]) != corpus_sha256():
                raise SystemExit(f"{path} was built from another corpus: rebuild it with "
                                 "`python -m bench.facts embed`")
            self._facts, self._cues = data["facts"], data["cues"]
            self._fact_row = self._positions(data["fact_ids"])
            self._cue_row = self._positions(data["cue_ids"])
        self.observable = int((self._fact_row[:FACTS] >= 0).sum())

    @staticmethod
    def _positions(ids: np.ndarray) -> np.ndarray:
        rows = np.full(FACTS + UNSEEN, -1)
        rows[ids] = np.arange(len(ids))
        return rows

    @staticmethod
    def _get(table: np.ndarray, rows: np.ndarray, indices) -> np.ndarray:
        picked = rows[np.asarray(indices)]
        if (picked < 0).any():
            raise SystemExit("the vector cache lacks some items: rebuild it with "
                             "`python -m bench.facts embed` (without --limit)")
        return table[picked].astype(np.float32)

    def facts(self, indices) -> np.ndarray:
        return self._get(self._facts, self._fact_row, indices)

    def cues(self, indices) -> np.ndarray:
        return self._get(self._cues, self._cue_row, indices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build", help="rebuild bench/data/pypi_facts.tsv.xz (dev machine)")
    make.add_argument("--pypi", type=Path, required=True, help="TSV with a `summary` column")
    vec = sub.add_parser("embed", help="encode facts and cues into the vector cache")
    vec.add_argument("--limit", type=int, help="only the first N facts (default: all)")
    args = parser.parse_args()
    if args.command == "build":
        rows = build(args.pypi)
        body = "fact\tcue\n" + "".join(f"{f}\t{c}\n" for f, c in rows)
        DATA_FILE.write_bytes(lzma.compress(body.encode("utf-8"), preset=9))
        print(f"wrote {len(rows)} facts to {DATA_FILE} ({DATA_FILE.stat().st_size / 1e6:.1f} MB)")
    else:
        embed(args.limit)


if __name__ == "__main__":
    main()
