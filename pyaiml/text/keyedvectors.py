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
  and ``save``/``load``: one .npz file (vectors, counts, vocabulary as JSON); no pickle on
  either side. Every save goes through pyaiml._io.atomic_write (a failed save leaves any
  previous file as it was); every load checks the sizes a file declares against the file
  before allocating and raises ``ValueError`` naming the file for anything malformed.

Not here: training (pyaiml/text/word2vec.py). Tests: tests/test_word2vec*.py.
"""
from __future__ import annotations

import contextlib
import difflib
import io
import json
import os

import numpy as np

from pyaiml._io import atomic_savez, atomic_write, bad_file, plain_source, read_npz

FORMAT = "pyaiml.KeyedVectors/1"
_HEADER_MAX = 1000       # bytes of a word2vec header line '<count> <dimension>'
_WORD_MAX = 100000       # bytes of one key in the binary format
_BAD_KEY_CHARS = " \n"   # the formats separate keys from values by a space and rows by a newline


def _json_arr(obj):
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def _from_json_arr(a, op, path, what):
    """JSON stored as a uint8 array; any malformation is a ValueError naming the file."""
    a = np.asarray(a)
    if a.dtype != np.uint8 or a.ndim != 1:
        raise bad_file(op, path, f"{what} must be a 1-D uint8 array of JSON text. Received {a.dtype} {a.shape}")
    try:
        return json.loads(a.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise bad_file(op, path, f"{what} is not JSON: {type(e).__name__}: {e}") from None


@contextlib.contextmanager
def _open_plain(path, op, key, inner):
    """A binary file object over ``path``'s content (decrypted in memory when it is sealed)."""
    src = plain_source(path, op, path, key, inner)
    if isinstance(src, bytes):
        with io.BytesIO(src) as f:
            yield f
    else:
        with open(path, "rb") as f:
            yield f


def _load_npz(path, op, key=None, inner=None):
    """(arrays, meta dict) of a pyaiml .npz save file (decrypted with ``key`` when given)."""
    path = os.fspath(path)
    z = read_npz(path, op, key=key, inner=inner)
    if "meta" not in z:
        raise bad_file(op, path, f"no 'meta' entry, so not a pyaiml save file (members: {sorted(z)[:8]})")
    meta = _from_json_arr(z["meta"], op, path, "meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("format"), str):
        raise bad_file(op, path, "meta must be a JSON object with a 'format' string")
    return z, meta


def _check_keys(keys, op, path):
    """The JSON key list: distinct strings."""
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise bad_file(op, path, "keys must be a JSON list of strings")
    if len(set(keys)) != len(keys):
        seen = set()
        dup = next(k for k in keys if k in seen or seen.add(k))
        raise bad_file(op, path, f"key {dup!r} appears twice")
    return keys


def _check_matrix(a, shape, op, path, what):
    if a.dtype.kind != "f" or a.shape != shape:
        raise bad_file(op, path, f"{what} must be a float array of shape {shape}. Received {a.dtype} {a.shape}")
    return a


def _check_counts(c, V, op, path, what="attr_count"):
    """Word counts: V integers >= 0."""
    if c.dtype.kind not in "iu" or c.shape != (V,):
        raise bad_file(op, path, f"{what} must be {V} integers. Received {c.dtype} {c.shape}")
    neg = np.flatnonzero(c < 0)
    if neg.size:
        raise bad_file(op, path, f"{what} must be >= 0 (word counts). Received {c[neg[0]]} at row {neg[0]}")
    return c.astype(np.int64)


def _read_vocab_counts(fvocab, encoding, unicode_errors, op, key=None):
    """``{word: count}`` from a vocabulary file of '<word> <count>' lines."""
    path = os.fspath(fvocab)
    counts = {}
    with _open_plain(path, op, key, "word2vec-vocab") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode(encoding, errors=unicode_errors).rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise bad_file(op, path, f"line {lineno} is not {encoding} text: {e}") from None
            if not line.strip():
                continue
            w, sep, c = line.rstrip().rpartition(" ")
            try:
                n = int(c)
            except ValueError:
                n = None
            if not sep or n is None:
                raise bad_file(op, path, f"line {lineno} is not '<word> <count>'. Received {line[:60]!r}")
            if not 0 <= n < 2**63:
                raise bad_file(op, path, f"count must be >= 0 (a word count) and < 2**63. Received {n} for {w!r} on "
                                         f"line {lineno}")
            counts[w] = n
    return counts


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
                             prefix="", append=False, sort_attr="count", key=None):
        """Write the word2vec text or binary format (gensim and word2vec.c read it).
        ``key``: encrypt the file (and ``fvocab``) with AES-256-GCM (see pyaiml.privacy);
        only pyaiml's ``load_word2vec_format(..., key=)`` reads it back then.

        Text values are written in their shortest exact float32 form, so they load back
        bit for bit. Everything is checked before writing (a key with a space or a newline,
        which no reader could split from its values, is a ``ValueError``), and each file is
        written through a temporary file renamed into place, so a failed save leaves any
        previous file (``fname`` and ``fvocab``) as it was.
        """
        op = "save_word2vec_format"
        n, D = len(self.index_to_key), self.vector_size
        vecs = np.asarray(self.vectors)
        if vecs.shape != (n, D):
            raise ValueError(f"{op}: vectors must have one row of {D} values per key, shape ({n}, {D}). "
                             f"Received shape {vecs.shape}")
        vecs = vecs.astype(np.float32)
        V = n if total_vec is None else total_vec
        if isinstance(V, bool) or not isinstance(V, (int, np.integer)) or V < 0:
            raise ValueError(f"{op}: total_vec must be an integer >= 0. Received {total_vec!r}")
        words = []
        for i, k in enumerate(self.index_to_key):
            w = f"{prefix}{k}"
            bad = [c for c in _BAD_KEY_CHARS if c in w]
            if bad:
                raise ValueError(f"{op}: key {w!r} (row {i}) contains {bad[0]!r}, which separates keys from values "
                                 "in the word2vec formats; such a file could not be read back")
            try:
                words.append(w.encode("utf8"))
            except UnicodeEncodeError as e:
                raise ValueError(f"{op}: key {w!r} (row {i}) cannot be written as UTF-8 ({e.reason})") from None
        counts = self.expandos.get("count")
        if fvocab is not None:
            cnt = (np.asarray(counts).tolist() if counts is not None else list(range(n, 0, -1)))
            if len(cnt) != n:
                raise ValueError(f"{op}: the 'count' attribute has {len(cnt)} entries for {n} keys")

            def write_vocab(f):
                for w, c in zip(words, cnt):
                    f.write(w + f" {int(c)}\n".encode("ascii"))

            atomic_write(fvocab, write_vocab, key=key, inner="word2vec-vocab")

        def write(f):
            if write_header:
                f.write(f"{int(V)} {D}\n".encode("ascii"))
            for w, row in zip(words, vecs):
                if binary:
                    f.write(w + b" " + row.astype("<f4").tobytes() + b"\n")
                else:
                    f.write(w + b" " + " ".join(str(v) for v in row).encode("ascii") + b"\n")

        atomic_write(fname, write, append=append, key=key, inner="word2vec-format")

    @classmethod
    def load_word2vec_format(cls, fname, fvocab=None, binary=False, encoding="utf8", unicode_errors="strict",
                             limit=None, datatype=np.float32, no_header=False, key=None):
        """Read the word2vec text or binary format (as written by gensim or word2vec.c).

        A file whose header is not ``<count> <dim>``, whose header declares more vectors than
        the file can hold (checked before anything is allocated), that is truncated (also in
        the middle of its last number: a text row must end with a newline), that holds more
        rows than its header says, whose rows do not have ``dim`` numbers, or whose keys do
        not decode raises ``ValueError`` naming the file and the line or vector. ``fvocab``:
        '<word> <count>' lines; a count that is not an integer >= 0 is a ``ValueError``.
        ``key``: for files written with ``save_word2vec_format(..., key=)``.
        """
        op = "load_word2vec_format"
        name = os.fspath(fname)
        counts = _read_vocab_counts(fvocab, encoding, unicode_errors, op, key) if fvocab is not None else None
        with _open_plain(name, op, key, "word2vec-format") as f:
            size = f.seek(0, 2)
            f.seek(0)
            if no_header:
                if binary:
                    raise ValueError(f"{op}: no_header=True needs the text format")
                keys, vecs = _read_text_rows(f, name, op, None, None, encoding, unicode_errors, limit)
                D = vecs.shape[1]
            else:
                head = f.readline(_HEADER_MAX)
                try:
                    parts = head.decode("ascii").split()
                    if len(parts) != 2 or not head.endswith(b"\n"):
                        raise ValueError
                    V, D = int(parts[0]), int(parts[1])
                    if V < 0 or D < 1:
                        raise ValueError
                except (ValueError, UnicodeDecodeError):
                    raise bad_file(op, name, f"it does not start with a '<count> <dimension>' header line "
                                             f"(first bytes {head[:40]!r})") from None
                rows = min(V, int(limit)) if limit else V
                # the smallest row: an empty key, then D numbers of one digit each after a space and a
                # newline (text), or a space and D float32 values (binary)
                least = rows * (4 * D + 1 if binary else 2 * D + 1)
                left = size - len(head)
                if least > left:
                    raise bad_file(op, name, f"the header declares {V} vectors of {D} values, which need at "
                                             f"least {least} bytes, but only {left} follow the header")
                if binary:
                    keys, vecs = _read_binary_rows(f, name, op, rows, D, encoding, unicode_errors)
                else:
                    keys, vecs = _read_text_rows(f, name, op, rows, D, encoding, unicode_errors, None)
                if rows == V and f.read(_HEADER_MAX).strip():
                    raise bad_file(op, name, f"the header says {V} vectors, but more data follows vector {V}")
        kv = cls(D)
        uniq, idx = {}, []
        for i, k in enumerate(keys):
            if k not in uniq:
                uniq[k] = len(idx)
                idx.append(i)
        keys = list(uniq)
        vecs = vecs[idx] if len(idx) != len(vecs) else vecs
        cnt = np.array([counts.get(k, 0) for k in keys] if counts is not None else
                       [len(keys) - i for i in range(len(keys))], dtype=np.int64)
        kv._set(keys, vecs.astype(datatype), cnt)
        return kv

    # -- native save ----------------------------------------------------------------------
    def save(self, fname, key=None):
        """Save to one .npz file (no pickle), atomically; ``key``: encrypt it (AES-256-GCM,
        see pyaiml.privacy)."""
        atomic_savez(fname, key=key, inner="keyedvectors", meta=_json_arr({"format": FORMAT, "vector_size": self.vector_size}),
                    keys=_json_arr(self.index_to_key), vectors=np.ascontiguousarray(self.vectors),
                    **{f"attr_{k}": v for k, v in self.expandos.items()})

    @classmethod
    def load(cls, fname, mmap=None, key=None):
        """Load a file written by :meth:`save` (or the ``wv`` part of a Word2Vec save).

        Anything malformed (not a pyaiml .npz, members missing or of the wrong shape, keys
        that repeat, negative counts) is a ``ValueError`` naming the file."""
        op = "KeyedVectors.load"
        path = os.fspath(fname)
        z, meta = _load_npz(path, op, key)
        if meta["format"] == "pyaiml.Word2Vec/1":
            from pyaiml.text.word2vec import Word2Vec

            return Word2Vec.load(path, key=key).wv
        if meta["format"] != FORMAT:
            raise bad_file(op, path, f"format {meta['format']!r}, expected {FORMAT!r}")
        D = meta.get("vector_size")
        if isinstance(D, bool) or not isinstance(D, int) or D < 1:
            raise bad_file(op, path, f"vector_size must be an integer >= 1. Received {D!r}")
        for k in ("keys", "vectors"):
            if k not in z:
                raise bad_file(op, path, f"member {k!r} is missing")
        extra = sorted(k for k in z if k not in ("meta", "keys", "vectors") and not k.startswith("attr_"))
        if extra:
            raise bad_file(op, path, f"unexpected members {extra}")
        keys = _check_keys(_from_json_arr(z["keys"], op, path, "keys"), op, path)
        vecs = _check_matrix(z["vectors"], (len(keys), D), op, path, "vectors")
        kv = cls(D)
        kv._set(keys, vecs)
        for f in z:
            if f == "attr_count":
                kv.expandos["count"] = _check_counts(z[f], len(keys), op, path)
            elif f.startswith("attr_"):
                a = z[f]
                if a.dtype.kind not in "iuf" or a.shape != (len(keys),):
                    raise bad_file(op, path, f"{f} must be {len(keys)} numbers. Received {a.dtype} {a.shape}")
                kv.expandos[f[5:]] = a
        return kv

    def __repr__(self):
        return f"KeyedVectors<vector_size={self.vector_size}, {len(self)} keys>"


def _decode_key(raw, encoding, unicode_errors, op, name, where):
    try:
        return raw.decode(encoding, errors=unicode_errors)
    except UnicodeDecodeError as e:
        raise bad_file(op, name, f"{where}: the key is not {encoding} text ({e.reason}); pass unicode_errors="
                                 "'replace' to read it anyway") from None


def _read_binary_rows(f, name, op, V, D, encoding, unicode_errors):
    """V rows of '<key> <D little-endian float32>' (a newline after each is optional)."""
    keys, vecs = [], np.empty((V, D), dtype=np.float32)
    nbytes = 4 * D
    for i in range(V):
        word = bytearray()
        while True:
            ch = f.read(1)
            if not ch:
                raise bad_file(op, name, f"truncated: the header says {V} vectors, the file ends in vector {i}")
            if ch == b" ":
                break
            if ch != b"\n" or word:
                word += ch
            if len(word) > _WORD_MAX:
                raise bad_file(op, name, f"vector {i} has no key/vector separator in {_WORD_MAX} bytes; not a "
                                         "binary word2vec file?")
        raw = f.read(nbytes)
        if len(raw) < nbytes:
            raise bad_file(op, name, f"truncated: vector {i} has {len(raw)} of {nbytes} bytes")
        keys.append(_decode_key(bytes(word), encoding, unicode_errors, op, name, f"vector {i}"))
        vecs[i] = np.frombuffer(raw, dtype="<f4")
    return keys, vecs


def _read_text_rows(f, name, op, V, D, encoding, unicode_errors, limit):
    """Rows of '<key> <D numbers>' each ending with a newline; V rows (None: every line,
    D from the first one, limited to ``limit`` rows)."""
    lineno = 1 if V is not None else 0
    keys, rows = [], []
    out = np.empty((V, D), dtype=np.float32) if V is not None else None  # V checked against the file size
    want = V if V is not None else (int(limit) if limit else None)
    while want is None or len(keys) < want:
        raw = f.readline()
        lineno += 1
        if not raw:
            break
        if not raw.endswith(b"\n"):
            raise bad_file(op, name, f"line {lineno} does not end with a newline: the file is cut off (the last "
                                     "number may be incomplete)")
        try:
            line = raw.decode(encoding, errors=unicode_errors)
        except UnicodeDecodeError:
            raise bad_file(op, name, f"line {lineno} is not {encoding} text, so not a number either (binary "
                                     "file read as text? pass binary=True)") from None
        parts = line.rstrip("\n").rstrip().split(" ")
        if D is None:
            D = len(parts) - 1
            if D < 1:
                raise bad_file(op, name, f"line {lineno} holds no numbers; not in word2vec text format")
        if len(parts) != D + 1:
            raise bad_file(op, name, f"line {lineno} has {len(parts) - 1} values, expected {D} (truncated or "
                                     "not a word2vec text file?)")
        try:
            row = np.array(parts[1:], dtype=np.float32)
        except ValueError:
            raise bad_file(op, name, f"line {lineno} has a value that is not a number (binary file read as "
                                     "text?)") from None
        if out is not None:
            out[len(keys)] = row
        else:
            rows.append(row)
        keys.append(parts[0])
    if V is not None and len(keys) < V:
        raise bad_file(op, name, f"truncated: the header says {V} vectors, found {len(keys)}")
    if V is None:
        if not keys:
            raise bad_file(op, name, "it is empty")
        out = np.vstack(rows)
    return keys, out


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
