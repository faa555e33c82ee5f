"""A BM25 keyword index over the images' captions and prompts, for keyword and hybrid search.

Vectors find what a text *means*; words find what it *says*: an id in a file name, a rare word in a
caption, a prompt's exact phrase. The index is a sparse document x term matrix whose entries are
already the BM25 term weights (Lucene's variant)::

    w(t, d) = idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * len(d) / avglen))
    idf(t)  = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

so a query's scores are one sparse matrix-vector product over the query's terms:
``score(d) = sum_t q_t * w(t, d)``, with ``q_t`` the weight of the query part the term came from.
Text is NFKC-normalised, case-folded and split into words (``\\w+``), and plurals lose their "s"
with Lucene's minimal English stemmer (Harman's S-stemmer: "dogs" -> "dog", "fries" -> "fry",
"bus" stays), so "hot dog" finds "two hot dogs". There is no stop-word list: BM25's idf already
makes "a" and "the" nearly worthless.

The index is one ``.npz`` file under ``index/`` (written atomically), keyed by image id: a search
maps ids to FAISS positions once when it loads it. Building is a whole-set step (idf and the mean
length are properties of the whole set); it costs about a second per 100k captions and is skipped
when no ``images`` partition changed.
"""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from hotdog_dagster.core.io.locks import file_lock, lock_path
from hotdog_dagster.core.io.store import CorruptFile, Store, atomic_path

log = logging.getLogger(__name__)

#: The columns of ``images`` whose words are indexed (those present in the table).
TEXT_COLUMNS = ("caption", "prompt")
K1 = 1.2
B = 0.75
FILE_NAME = "keyword.npz"
FORMAT_VERSION = 1
_WORD = re.compile(r"\w+")


def stem(word: str) -> str:
    """Lucene's ``EnglishMinimalStemmer`` (Harman's S-stemmer): plural endings only, nothing clever."""
    n = len(word)
    if n < 3 or word[-1] != "s" or word[-2] in "us":
        return word
    if word[-2] == "e":
        if n > 3 and word[-3] == "i" and word[-4] not in "ae":
            return word[:-3] + "y"
        if word[-3] in "iaoe":
            return word
    return word[:-1]


def tokenize(text: str) -> list[str]:
    """The words of a text as the index sees them: NFKC, case-folded, ``\\w+`` runs, plurals stemmed."""
    return [stem(w) for w in _WORD.findall(unicodedata.normalize("NFKC", text).casefold())]


@dataclass(frozen=True)
class KeywordInfo:
    documents: int
    with_text: int
    terms: int
    seconds: float
    rebuilt: bool


@dataclass
class KeywordIndex:
    """BM25 term weights, documents x terms (CSC: a query reads only its terms' columns)."""

    ids: np.ndarray  # object array: row -> image id
    vocabulary: dict[str, int]
    weights: sp.csc_matrix
    meta: dict

    def query_terms(self, parts: Sequence[tuple[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Column numbers and weights of weighted query texts (a repeated word counts again; unknown words drop)."""
        weight_of: dict[int, float] = {}
        for text, w in parts:
            for token in tokenize(text):
                col = self.vocabulary.get(token)
                if col is not None:
                    weight_of[col] = weight_of.get(col, 0.0) + float(w)
        cols = np.fromiter(weight_of.keys(), dtype=np.int64, count=len(weight_of))
        return cols, np.fromiter(weight_of.values(), dtype=np.float32, count=len(weight_of))

    def scores(self, parts: Sequence[tuple[str, float]]) -> np.ndarray:
        """BM25 score of every document for weighted query texts (0 where no query word occurs)."""
        return score_matrix(self.weights, *self.query_terms(parts))


def score_matrix(weights: sp.csc_matrix, cols: np.ndarray, qw: np.ndarray) -> np.ndarray:
    """``weights[:, cols] @ qw`` as a dense float32 vector (zeros when no column is asked for)."""
    if len(cols) == 0:
        return np.zeros(weights.shape[0], dtype=np.float32)
    return np.asarray(weights[:, cols] @ qw, dtype=np.float32).ravel()


def document_texts(table: pa.Table) -> list[str | None]:
    """Each row's indexed text: its caption and prompt (whichever exist), joined; None when it has none."""
    columns = [table.column(c).to_pylist() for c in TEXT_COLUMNS if c in table.column_names]
    if not columns:
        return [None] * table.num_rows
    return [" ".join(v for v in values if v) or None for values in zip(*columns, strict=True)]


def build(ids: Sequence[str], texts: Sequence[str | None], k1: float = K1, b: float = B) -> KeywordIndex:
    """The BM25 index of ``texts`` (one per id; None or empty for an image without words)."""
    doc_of: list[int] = []
    tokens: list[str] = []
    for row, text in enumerate(texts):
        if text:
            words = tokenize(text)
            tokens += words
            doc_of += [row] * len(words)
    n = len(ids)
    vocab_array, term_of = np.unique(np.asarray(tokens, dtype=object).astype(str), return_inverse=True)
    tf = sp.csr_matrix(
        (np.ones(len(tokens), dtype=np.float32), (np.asarray(doc_of, dtype=np.int64), term_of.ravel())),
        shape=(n, len(vocab_array)),
        dtype=np.float32,
    )
    tf.sum_duplicates()
    length = np.asarray(tf.sum(axis=1), dtype=np.float32).ravel()
    with_text = length > 0
    avg = float(length[with_text].mean()) if with_text.any() else 1.0
    df = np.bincount(tf.indices, minlength=tf.shape[1]).astype(np.float64)
    idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
    rows = np.repeat(np.arange(n), np.diff(tf.indptr))
    norm = k1 * (1 - b + b * length[rows] / avg)
    tf.data = idf[tf.indices] * tf.data * (k1 + 1) / (tf.data + norm)
    meta = {
        "version": FORMAT_VERSION,
        "k1": k1,
        "b": b,
        "documents": n,
        "with_text": int(with_text.sum()),
        "terms": len(vocab_array),
        "mean_length": avg,
        "columns": list(TEXT_COLUMNS),
    }
    return KeywordIndex(
        ids=np.asarray(list(ids), dtype=object),
        vocabulary={str(t): i for i, t in enumerate(vocab_array)},
        weights=tf.tocsc(),
        meta=meta,
    )


def _pack(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one UTF-8 byte blob and end offsets (no pickles in the file, no fixed-width padding)."""
    encoded = [s.encode("utf-8") for s in strings]
    ends = np.cumsum([len(e) for e in encoded], dtype=np.int64) if encoded else np.zeros(0, np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), ends


def _unpack(blob: np.ndarray, ends: np.ndarray) -> list[str]:
    data = blob.tobytes()
    starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
    return [data[s:e].decode("utf-8") for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def save(index: KeywordIndex, path: Path) -> Path:
    """Write the index as one ``.npz``, atomically (a reader sees the old file or the new one)."""
    vocab = sorted(index.vocabulary, key=index.vocabulary.__getitem__)
    vocab_blob, vocab_ends = _pack(vocab)
    id_blob, id_ends = _pack([str(i) for i in index.ids])
    w = index.weights
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            data=w.data.astype(np.float32),
            indices=w.indices.astype(np.int32),
            indptr=w.indptr.astype(np.int64),
            shape=np.asarray(w.shape, dtype=np.int64),
            vocab_blob=vocab_blob,
            vocab_ends=vocab_ends,
            id_blob=id_blob,
            id_ends=id_ends,
            meta=np.frombuffer(json.dumps(index.meta).encode(), dtype=np.uint8),
        )
    return path


def path_of(store: Store) -> Path:
    return store.index_dir / FILE_NAME


#: What a damaged ``keyword.npz`` raises while being read (a torn zip, a missing member, bad JSON, bad shapes).
_DAMAGED = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError)


def read_meta(store: Store) -> dict | None:
    """The stored index's meta (counts, parameters, the partitions it was built from), or None.

    None too for a file that cannot be read, so the next update rebuilds it instead of failing.
    """
    path = path_of(store)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(z["meta"].tobytes())
    except _DAMAGED as exc:
        log.warning("%s is unreadable (%s); keyword_index rebuilds it", path, exc)
        return None


def load(store: Store) -> KeywordIndex:
    path = path_of(store)
    if not path.exists():
        raise FileNotFoundError(
            f"no keyword index at {path}; materialise keyword_index (`hotdog run` builds it) for keyword or hybrid search"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            shape = tuple(int(x) for x in z["shape"])
            weights = sp.csc_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            vocab = _unpack(z["vocab_blob"], z["vocab_ends"])
            ids = np.asarray(_unpack(z["id_blob"], z["id_ends"]), dtype=object)
            meta = json.loads(z["meta"].tobytes())
    except _DAMAGED as exc:
        raise CorruptFile(path, "keyword_index", None, f"{type(exc).__name__}: {exc}") from None
    return KeywordIndex(ids=ids, vocabulary={t: i for i, t in enumerate(vocab)}, weights=weights, meta=meta)


def _signatures(store: Store) -> dict[str, list[int]]:
    """Each ``images`` partition's (size, mtime) signature: a re-materialised partition changes it."""
    out = {}
    for f in store.partition_files("images"):
        st = f.stat()
        out[f.stem] = [st.st_size, st.st_mtime_ns]
    return out


def update_from_store(store: Store, k1: float = K1, b: float = B, rebuild: bool = False) -> KeywordInfo:
    """Build ``index/keyword.npz`` from every ``images`` partition, unless none changed since the last build."""
    t0 = time.perf_counter()
    signatures = _signatures(store)
    if not signatures:
        raise FileNotFoundError("no images to index yet; materialise raw_images for at least one partition")
    old = read_meta(store)
    same = old is not None and old.get("version") == FORMAT_VERSION and (old.get("k1"), old.get("b")) == (k1, b)
    if same and not rebuild and old.get("partition_signatures") == signatures:
        return KeywordInfo(old["documents"], old["with_text"], old["terms"], time.perf_counter() - t0, rebuilt=False)
    table = store.read_table("images")
    present = set(table.column_names)
    table = table.select(["id", *[c for c in TEXT_COLUMNS if c in present]])
    index = build(table.column("id").to_pylist(), document_texts(table), k1=k1, b=b)
    index.meta["partition_signatures"] = signatures
    # The index lock: image_index swaps index/ whole, carrying this file over; a save between its
    # carry-over and its swap would be lost.
    with file_lock(lock_path(store.root, "index"), what=f"the index of {store.root}"):
        save(index, path_of(store))
    m = index.meta
    return KeywordInfo(m["documents"], m["with_text"], m["terms"], time.perf_counter() - t0, rebuilt=True)
