"""KeyedVectors: words -> vectors, with gensim 4's query API and file formats.

- Lookup: ``kv['word']``, ``kv[['a', 'b']]`` (2-D), ``'word' in kv``, ``get_vector``,
  ``key_to_index``, ``index_to_key``, ``vectors`` (V, D) float32.
- A space-joined phrase that is not itself a key but whose words all are (``kv['machine
  learning']``) returns the mean of the word vectors. An unknown word raises ``KeyError``
  naming the closest known words (difflib, among the 20k most frequent).
- Queries: ``most_similar`` (positive/negative words or vectors, topn, restrict_vocab),
  ``similarity``, ``n_similarity``, ``doesnt_match``, ``evaluate_word_pairs`` (Pearson,
  Spearman, OOV %), ``evaluate_word_analogies`` (3CosAdd, batched as one matrix product).
- Files: ``save_word2vec_format``/``load_word2vec_format`` in the word2vec text and binary
  formats (readable by gensim and word2vec.c, and reading theirs; values round-trip exactly),
  and ``save``/``load``: one .npz file (vectors, counts, vocabulary as JSON), written to a
  temporary file and renamed into place; no pickle on either side.

Not here: training (pyaiml/text/word2vec.py). Tests: tests/test_word2vec*.py.
"""
from __future__ import annotations

import difflib
import json
import os

import numpy as np

from pyaiml._io import atomic_savez

FORMAT = "pyaiml.KeyedVectors/1"


def _json_arr(obj):
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def _from_json_arr(a):
    return json.loads(bytes(np.asarray(a, dtype=np.uint8)).decode("utf-8"))


def _load_npz(path, fmt):
    try:
        z = np.load(os.fspath(path), allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{fmt}: {path!s} is not a pyaiml save file ({e})") from None
    if not hasattr(z, "files") or "meta" not in z.files:
        raise ValueError(f"{fmt}: {path!s} is not a pyaiml save file (no 'meta' entry)")
    meta = _from_json_arr(z["meta"])
    return z, meta


class KeyedVectors:
    """Vectors addressed by string keys (gensim 4 ``KeyedVectors`` API).

    Parameters
    ----------
    vector_size : int
        D, the dimension of every vector.
    count : int
        Rows to allocate up front (filled with zeros); usually 0.
    """

    def __init__(self, vector_size: int, count: int = 0, dtype=np.float32):
        if isinstance(vector_size, bool) or not isinstance(vector_size, (int, np.integer)) or vector_size < 1:
            raise ValueError(f"KeyedVectors: vector_size must be an integer >= 1. Received {vector_size!r}")
        self.vector_size = int(vector_size)
        self.vectors = np.zeros((count, self.vector_size), dtype=dtype)
        self.index_to_key: list[str] = []
        self.key_to_index: dict[str, int] = {}
        self.expandos: dict[str, np.ndarray] = {}
        self.norms = None

    # -- building -------------------------------------------------------------------------
    def _set(self, keys, vectors, counts=None):
        self.index_to_key = list(keys)
        self.key_to_index = {k: i for i, k in enumerate(self.index_to_key)}
        self.vectors = vectors
        if counts is not None:
            self.expandos["count"] = np.asarray(counts, dtype=np.int64)
        self.norms = None

    def add_vectors(self, keys, weights):
        """Append keys with their vectors (existing keys are overwritten)."""
        if isinstance(keys, str):
            keys, weights = [keys], np.asarray(weights)[None]
        weights = np.asarray(weights, dtype=self.vectors.dtype).reshape(len(keys), self.vector_size)
        new = [k for k in keys if k not in self.key_to_index]
        rows = np.concatenate([np.asarray(self.vectors), np.zeros((len(new), self.vector_size), self.vectors.dtype)])
        for k in new:
            self.key_to_index[k] = len(self.index_to_key)
            self.index_to_key.append(k)
        for k, w in zip(keys, weights):
            rows[self.key_to_index[k]] = w
        if "count" in self.expandos:
            self.expandos["count"] = np.concatenate([self.expandos["count"], np.zeros(len(new), np.int64)])
        self.vectors = rows
        self.norms = None

    def get_vecattr(self, key, attr):
        return self.expandos[attr][self.get_index(key)].item()

    def set_vecattr(self, key, attr, val):
        if attr not in self.expandos:
            self.expandos[attr] = np.zeros(len(self.index_to_key), np.int64)
        self.expandos[attr][self.get_index(key)] = val

    # -- lookup ---------------------------------------------------------------------------
    def __len__(self):
        return len(self.index_to_key)

    def __contains__(self, key):
        return key in self.key_to_index

    def has_index_for(self, key):
        return key in self.key_to_index

    def _missing(self, key):
        known = self.index_to_key[:20000]
        close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.6) if isinstance(key, str) else []
        hint = f"; closest known words: {', '.join(repr(c) for c in close)}" if close else ""
        return KeyError(f"word {key!r} not in vocabulary ({len(self)} words){hint}")

    def get_index(self, key, default=None):
        i = self.key_to_index.get(key) if isinstance(key, str) else None
        if i is not None:
            return i
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < len(self):
            return int(key)
        if default is not None:
            return default
        raise self._missing(key)

    def _phrase(self, key):
        if isinstance(key, str) and key not in self.key_to_index:
            parts = key.split()
            if len(parts) > 1 and all(p in self.key_to_index for p in parts):
                return [self.key_to_index[p] for p in parts]
            if len(parts) > 1:
                unknown = [p for p in parts if p not in self.key_to_index]
                e = self._missing(unknown[0])
                raise KeyError(
                    f"{key!r} is not in the vocabulary, and neither is its word {unknown[0]!r} "
                    f"(a phrase of known words gives the mean of their vectors); {e.args[0]}"
                )
        return None

    def get_vector(self, key, norm=False):
        """Vector (D,) of ``key``; unit length if ``norm``. A phrase of known words -> mean."""
        ph = self._phrase(key)
        if ph is not None:
            v = np.asarray(self.vectors)[ph].mean(axis=0)
            if norm:
                v = v / max(np.linalg.norm(v), 1e-30)
            return v.astype(self.vectors.dtype)
        i = self.get_index(key)
        if norm:
            self.fill_norms()
            return self.vectors[i] / self.norms[i]
        return np.array(self.vectors[i])

    word_vec = get_vector

    def __getitem__(self, key):
        if isinstance(key, (str, int, np.integer)):
            return self.get_vector(key)
        return np.vstack([self.get_vector(k) for k in key])

    def fill_norms(self, force=False):
        if self.norms is None or force or len(self.norms) != len(self.vectors):
            n = np.linalg.norm(np.asarray(self.vectors, dtype=np.float64), axis=1)
            self.norms = np.where(n > 0, n, 1.0).astype(np.float32)

    def get_normed_vectors(self):
        self.fill_norms()
        return self.vectors / self.norms[:, None]

    # -- queries --------------------------------------------------------------------------
    def _weighted(self, positive, negative):
        def norm_list(x, sign):
            if x is None:
                return []
            if isinstance(x, (str, np.ndarray)) or (isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)
                                                   and not isinstance(x[1], str)):
                x = [x]
            out = []
            for item in x:
                if isinstance(item, tuple) and len(item) == 2 and not isinstance(item[1], str):
                    out.append((item[0], sign * float(item[1])))
                else:
                    out.append((item, sign * 1.0))
            return out

        items = norm_list(positive, 1.0) + norm_list(negative, -1.0)
        if not items:
            raise ValueError("most_similar: give at least one word or vector in positive or negative")
        vecs, used = [], set()
        for k, w in items:
            if isinstance(k, np.ndarray):
                vecs.append(w * k.astype(np.float64))
            else:
                vecs.append(w * self.get_vector(k, norm=True).astype(np.float64))
                if k in self.key_to_index:
                    used.add(self.key_to_index[k])
                else:  # a phrase of known words: leave its words out of the answers too
                    used.update(self._phrase(k) or ())
        mean = np.mean(vecs, axis=0)
        nrm = np.linalg.norm(mean)
        if nrm > 0:
            mean = mean / nrm
        return mean, used

    def most_similar(self, positive=None, negative=None, topn=10, clip_start=0, clip_end=None,
                     restrict_vocab=None, indexer=None):
        """Keys closest by cosine to the mean of ``positive`` minus ``negative`` (unit vectors).

        Returns a list of ``(key, similarity)``, best first (the query words excluded), or, if
        ``topn`` is None, the similarities to every key (array (V,)).
        """
        if isinstance(topn, (int, np.integer)) and topn < 1:
            return []
        mean, used = self._weighted(positive, negative)
        end = len(self) if restrict_vocab is None else min(int(restrict_vocab), len(self))
        if clip_end is not None:
            end = min(end, clip_end)
        self.fill_norms()
        m = np.asarray(self.vectors[clip_start:end], dtype=np.float32)
        sims = (m @ mean.astype(np.float32)) / self.norms[clip_start:end]
        if topn is None:
            return sims
        n = min(int(topn) + len(used), len(sims))
        best = np.argpartition(-sims, n - 1)[:n] if n < len(sims) else np.arange(len(sims))
        best = best[np.argsort(-sims[best], kind="stable")]
        out = [(self.index_to_key[i + clip_start], float(sims[i])) for i in best if i + clip_start not in used]
        return out[: int(topn)]

    def similar_by_word(self, word, topn=10, restrict_vocab=None):
        return self.most_similar(positive=[word], topn=topn, restrict_vocab=restrict_vocab)

    def similar_by_vector(self, vector, topn=10, restrict_vocab=None):
        return self.most_similar(positive=[np.asarray(vector)], topn=topn, restrict_vocab=restrict_vocab)

    def similarity(self, w1, w2):
        """Cosine similarity of two keys."""
        a = self.get_vector(w1, norm=True).astype(np.float64)
        b = self.get_vector(w2, norm=True).astype(np.float64)
        return float(a @ b)

    def n_similarity(self, ws1, ws2):
        if not len(ws1) or not len(ws2):
            raise ValueError("n_similarity: both word lists must be non-empty")
        a = np.mean([self.get_vector(w, norm=True) for w in ws1], axis=0)
        b = np.mean([self.get_vector(w, norm=True) for w in ws2], axis=0)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    def distance(self, w1, w2):
        return 1.0 - self.similarity(w1, w2)

    def doesnt_match(self, words):
        """The word furthest from the mean of the (known) words."""
        words = [w for w in words if w in self.key_to_index]
        if not words:
            raise ValueError("doesnt_match: none of the words is in the vocabulary")
        vecs = np.vstack([self.get_vector(w, norm=True) for w in words]).astype(np.float64)
        mean = vecs.mean(axis=0)
        mean /= max(np.linalg.norm(mean), 1e-30)
        return words[int(np.argmin(vecs @ mean))]

    def _ok_vocab(self, restrict_vocab, case_insensitive):
        keys = self.index_to_key[:restrict_vocab]
        if case_insensitive:
            ok = {}
            for i in range(len(keys) - 1, -1, -1):  # the most frequent spelling wins
                ok[keys[i].upper()] = i
            return ok
        return {k: i for i, k in enumerate(keys)}

    def evaluate_word_pairs(self, pairs, delimiter="\t", encoding="utf8", restrict_vocab=300000,
                            case_insensitive=True, dummy4unknown=False):
        """Correlation of model similarities with human ratings (e.g. WordSim-353).

        Returns ``(pearson, spearman, oov_ratio)``: (r, p-value) pairs (scipy's result
        objects when scipy is installed) and the percentage of pairs with an unknown word.
        """
        ok = self._ok_vocab(restrict_vocab, case_insensitive)
        model, gold, oov = [], [], 0
        with open(pairs, encoding=encoding) as f:
            for line in f:
                if not line.strip() or line.startswith("#"):
                    continue
                parts = line.rstrip("\n").split(delimiter)
                if len(parts) < 3:
                    continue
                try:
                    a, b, sim = parts[0], parts[1], float(parts[2])
                except ValueError:
                    continue
                if case_insensitive:
                    a, b = a.upper(), b.upper()
                if a not in ok or b not in ok:
                    oov += 1
                    if dummy4unknown:
                        model.append(0.0)
                        gold.append(sim)
                    continue
                model.append(self.similarity(self.index_to_key[ok[a]], self.index_to_key[ok[b]]))
                gold.append(sim)
        if len(gold) < 2:
            raise ValueError(f"evaluate_word_pairs: fewer than 2 usable pairs in {pairs!s} ({oov} out of vocabulary)")
        try:
            from scipy import stats

            pearson = stats.pearsonr(gold, model)
            spearman = stats.spearmanr(gold, model)
        except ImportError:
            pearson = (float(np.corrcoef(gold, model)[0, 1]), float("nan"))
            spearman = (float(np.corrcoef(_rank(gold), _rank(model))[0, 1]), float("nan"))
        return pearson, spearman, 100.0 * oov / (len(gold) + oov)

    def evaluate_word_analogies(self, analogies, restrict_vocab=300000, case_insensitive=True,
                                dummy4unknown=False, similarity_function="most_similar"):
        """Accuracy on ``a : b :: c : d`` questions (questions-words.txt format, 3CosAdd).

        Returns ``(score, sections)`` like gensim: ``sections`` is a list of
        ``{'section', 'correct', 'incorrect'}`` ending with ``'Total accuracy'``.
        """
        ok = self._ok_vocab(restrict_vocab, case_insensitive)
        R = min(restrict_vocab, len(self))
        self.fill_norms()
        normed = (np.asarray(self.vectors[:R], dtype=np.float32) / self.norms[:R, None]).astype(np.float32)
        sections, cur, quads = [], None, []

        def flush():
            if cur is None:
                return
            sec = {"section": cur, "correct": [], "incorrect": []}
            known = [q for q in quads if q[4] is not None]
            if known:
                idx = np.array([q[4] for q in known], dtype=np.int64)  # (n, 4): a, b, c, expected
                Q = normed[idx[:, 1]] - normed[idx[:, 0]] + normed[idx[:, 2]]
                Q /= np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-30)
                for s in range(0, len(Q), 2048):
                    S = Q[s:s + 2048] @ normed.T
                    rr = np.arange(S.shape[0])
                    for c in range(3):
                        S[rr, idx[s:s + 2048, c]] = -np.inf
                    pred = np.argmax(S, axis=1)
                    for q, p in zip(known[s:s + 2048], pred):
                        words = q[:4]
                        hit = (self.index_to_key[p].upper() if case_insensitive else self.index_to_key[p]) == words[3]
                        sec["correct" if hit else "incorrect"].append(words)
            if dummy4unknown:
                sec["incorrect"].extend(q[:4] for q in quads if q[4] is None)
            sections.append(sec)

        with open(analogies, encoding="utf8") as f:
            for line in f:
                if line.startswith(": "):
                    flush()
                    cur, quads = line[2:].strip(), []
                    continue
                if cur is None:
                    raise ValueError(f"evaluate_word_analogies: {analogies!s} lacks a ': section' line before the questions")
                parts = line.split()
                if len(parts) != 4:
                    continue
                if case_insensitive:
                    parts = [p.upper() for p in parts]
                ids = [ok.get(p) for p in parts]
                quads.append((*parts, ids if None not in ids else None))
        flush()
        total = {"section": "Total accuracy",
                 "correct": [q for s in sections for q in s["correct"]],
                 "incorrect": [q for s in sections for q in s["incorrect"]]}
        n = len(total["correct"]) + len(total["incorrect"])
        score = len(total["correct"]) / n if n else 0.0
        sections.append(total)
        return score, sections

    # -- word2vec formats -----------------------------------------------------------------
    def save_word2vec_format(self, fname, fvocab=None, binary=False, total_vec=None, write_header=True,
                             prefix="", append=False, sort_attr="count"):
        """Write the word2vec text or binary format (gensim and word2vec.c read it).

        Text values are written in their shortest exact float32 form, so they load back
        bit for bit.
        """
        V = len(self) if total_vec is None else int(total_vec)
        vecs = np.asarray(self.vectors, dtype=np.float32)
        if fvocab is not None:
            with open(fvocab, "wb") as vout:
                counts = self.expandos.get("count")
                for i, k in enumerate(self.index_to_key):
                    c = int(counts[i]) if counts is not None else len(self) - i
                    vout.write(f"{prefix}{k} {c}\n".encode("utf8"))
        with open(fname, "ab" if append else "wb") as f:
            if write_header:
                f.write(f"{V} {self.vector_size}\n".encode("utf8"))
            for i, k in enumerate(self.index_to_key):
                if binary:
                    f.write(f"{prefix}{k} ".encode("utf8") + vecs[i].astype("<f4").tobytes() + b"\n")
                else:
                    f.write(f"{prefix}{k} {' '.join(str(v) for v in vecs[i])}\n".encode("utf8"))

    @classmethod
    def load_word2vec_format(cls, fname, fvocab=None, binary=False, encoding="utf8", unicode_errors="strict",
                             limit=None, datatype=np.float32, no_header=False):
        """Read the word2vec text or binary format (as written by gensim or word2vec.c).

        A file that is truncated, whose header is not ``<count> <dim>``, or whose rows do not
        have ``dim`` numbers raises ``ValueError`` naming the file and the line.
        """
        name = os.fspath(fname)
        counts = None
        if fvocab is not None:
            counts = {}
            with open(fvocab, "rb") as f:
                for line in f:
                    w, c = line.decode(encoding, errors=unicode_errors).rstrip().rsplit(" ", 1)
                    counts[w] = int(c)
        with open(name, "rb") as f:
            if no_header:
                if binary:
                    raise ValueError("load_word2vec_format: no_header=True needs the text format")
                lines = f.read().decode(encoding, errors=unicode_errors).splitlines()
                first = lines[0].split() if lines else []
                if len(first) < 2:
                    raise ValueError(f"load_word2vec_format: {name} is empty or not in word2vec text format")
                V, D = len(lines), len(first) - 1
                header_lines = lines
            else:
                head = f.readline()
                try:
                    parts = head.decode("ascii").split()
                    V, D = int(parts[0]), int(parts[1])
                    if len(parts) != 2 or V < 0 or D < 1:
                        raise ValueError
                except (ValueError, IndexError, UnicodeDecodeError):
                    raise ValueError(
                        f"load_word2vec_format: {name} does not start with a '<count> <dimension>' header "
                        f"(first bytes {head[:40]!r}); not a word2vec file?"
                    ) from None
                header_lines = None
            if limit:
                V = min(V, int(limit))
            keys, vecs = [], np.zeros((V, D), dtype=np.float32)
            if binary:
                nbytes = 4 * D
                for i in range(V):
                    word = bytearray()
                    while True:
                        ch = f.read(1)
                        if not ch:
                            raise ValueError(f"load_word2vec_format: {name} is truncated: header says {V} vectors, "
                                             f"file ends in vector {i}")
                        if ch == b" ":
                            break
                        if ch != b"\n" or word:
                            word += ch
                        if len(word) > 100000:
                            raise ValueError(f"load_word2vec_format: {name} vector {i} has no word/vector separator; "
                                             "not a binary word2vec file?")
                    raw = f.read(nbytes)
                    if len(raw) < nbytes:
                        raise ValueError(f"load_word2vec_format: {name} is truncated: vector {i} has "
                                         f"{len(raw)} of {nbytes} bytes")
                    keys.append(word.decode(encoding, errors=unicode_errors))
                    vecs[i] = np.frombuffer(raw, dtype="<f4")
            else:
                src = iter(header_lines) if header_lines is not None else f
                i = 0
                for lineno, line in enumerate(src, start=1 if header_lines is not None else 2):
                    if i >= V:
                        break
                    if isinstance(line, bytes):
                        try:
                            line = line.decode(encoding, errors=unicode_errors)
                        except UnicodeDecodeError:
                            raise ValueError(f"load_word2vec_format: {name} line {lineno} is not {encoding} text, "
                                             "so not a number either (binary file read as text? pass binary=True)"
                                             ) from None
                    parts = line.rstrip("\n").rstrip().split(" ")
                    if len(parts) != D + 1:
                        raise ValueError(f"load_word2vec_format: {name} line {lineno} has {len(parts) - 1} values, "
                                         f"expected {D} (truncated or not a word2vec text file?)")
                    try:
                        vecs[i] = np.array(parts[1:], dtype=np.float32)
                    except ValueError:
                        raise ValueError(f"load_word2vec_format: {name} line {lineno} has a value that is not a "
                                         "number (binary file read as text?)") from None
                    keys.append(parts[0])
                    i += 1
                if i < V:
                    raise ValueError(f"load_word2vec_format: {name} is truncated: header says {V} vectors, found {i}")
        kv = cls(D)
        uniq, rows = {}, []
        for i, k in enumerate(keys):
            if k not in uniq:
                uniq[k] = len(rows)
                rows.append(i)
        keys = list(uniq)
        vecs = vecs[rows] if len(rows) != len(vecs) else vecs
        cnt = np.array([counts.get(k, 0) for k in keys] if counts is not None else
                       [len(keys) - i for i in range(len(keys))], dtype=np.int64)
        kv._set(keys, vecs.astype(datatype), cnt)
        return kv

    # -- native save ----------------------------------------------------------------------
    def save(self, fname):
        """Save to one .npz file (no pickle), atomically."""
        atomic_savez(fname, meta=_json_arr({"format": FORMAT, "vector_size": self.vector_size}),
                    keys=_json_arr(self.index_to_key), vectors=np.ascontiguousarray(self.vectors),
                    **{f"attr_{k}": v for k, v in self.expandos.items()})

    @classmethod
    def load(cls, fname, mmap=None):
        """Load a file written by :meth:`save` (or the ``wv`` part of a Word2Vec save)."""
        z, meta = _load_npz(fname, "KeyedVectors.load")
        if meta.get("format") == "pyaiml.Word2Vec/1":
            from pyaiml.text.word2vec import Word2Vec

            return Word2Vec.load(fname).wv
        if meta.get("format") != FORMAT:
            raise ValueError(f"KeyedVectors.load: {fname!s} has format {meta.get('format')!r}, expected {FORMAT!r}")
        kv = cls(int(meta["vector_size"]))
        keys = _from_json_arr(z["keys"])
        vecs = np.array(z["vectors"])
        if vecs.shape != (len(keys), kv.vector_size):
            raise ValueError(f"KeyedVectors.load: {fname!s} is inconsistent: {len(keys)} keys, vectors {vecs.shape}")
        kv._set(keys, vecs)
        for f in z.files:
            if f.startswith("attr_"):
                kv.expandos[f[5:]] = np.array(z[f])
        return kv

    def __repr__(self):
        return f"KeyedVectors<vector_size={self.vector_size}, {len(self)} keys>"


def _rank(x):
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    # average ties
    _, inv, cnt = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.zeros(len(cnt))
    np.add.at(sums, inv, r)
    return sums[inv] / cnt[inv]
