"""The ``pyaiml demo`` command: train the tutorial's models on bundled data and show what they learned.

What it is: a guided run, with no download, of the three samples pyaiml grew from plus a
text generator, each trained from scratch on data shipped in ``pyaiml/datasets/data`` (or
found on disk, for speech), printing progress (a bar redrawn in place on a terminal, one line
per epoch or step otherwise), what the model learned and how long it took, and a closing
summary table:

  word2vec  Word2Vec (skip-gram, negative sampling) on Tiny Shakespeare; nearest neighbours
            of a few words; then the mission's 4-sentence sample, ``model.wv['machine learning']``.
  cnn       the mission's Keras CNN (Conv2D 32, pool, Conv2D 64, pool, Dense 10 on 32x32x3
            inputs, Adam, categorical cross-entropy, batch 32) on the bundled 8x8 digits
            upscaled to 32x32x3; test accuracy on a stratified 20% split.
  speech    when the Free Spoken Digit Dataset is found: one left-right Gaussian HMM per digit
            on MFCC features (``pyaiml.hmm.HMMClassifier``); test accuracy on FSDD's official
            split (recordings 0-4 of every speaker and digit). Not found: skipped with a hint.
  text      a character-level Transformer language model (``pyaiml.seq.TransformerLM``) trained
            for a fixed time budget on Tiny Shakespeare; validation loss and a sample.

Where FSDD is looked for: ``--fsdd DIR``, else ``$PYAIML_FSDD``, else ``./data/fsdd`` in the
current directory (a folder holding the .wav files or a ``recordings/`` folder of them). An
explicit path that holds no FSDD is an error of that section; a missing default is a skip.

What it is not: a benchmark (``pyaiml bench``) or a test. The default budgets aim at well
under 10 minutes on a 2-core machine; ``--quick`` shrinks every section to seconds (used by
tests/test_demo.py).
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
import traceback
import warnings

import numpy as np

from pyaiml.datasets.fsdd import find_fsdd, holds_fsdd  # noqa: F401 (find_fsdd: part of the demo API)

SECTIONS = ("word2vec", "cnn", "speech", "text")
FSDD_HINT = ("get the Free Spoken Digit Dataset (https://github.com/Jakobovski/free-spoken-digit-dataset, "
             "CC BY-SA 4.0) and run `pyaiml demo --fsdd PATH` (the folder with the .wav files or with "
             "recordings/), or set PYAIML_FSDD=PATH, or put it in ./data/fsdd")


@dataclasses.dataclass
class Budget:
    """How much each section trains. ``DEFAULT`` is the full demo, ``QUICK`` a smoke run."""

    w2v_lines: int | None       # lines of Tiny Shakespeare used (None: all)
    w2v_epochs: int
    cnn_epochs: int
    cnn_train: int | None       # training images used (None: the whole 80% split)
    speech_states: int
    speech_iter: int
    speech_train_per_class: int | None  # training recordings per digit (None: all)
    text_seconds: float         # training time of the language model (evaluation excluded)
    text_context: int
    text_width: int
    text_layers: int
    text_heads: int
    text_tokens: int            # characters generated for the sample
    text_val_windows: "int | None"  # None: the whole validation tenth


# Measured (pyaiml demo, 2 threads, AVX-512, shared 2-core VM, 2026-11-28): word2vec 5-6 s,
# cnn 22-32 s, speech 4 s,
# text 150 s + 1-3 s; total 183 s (load ~5) and 246 s (load ~12). Quiet machine: word2vec 1.4 s,
# cnn 4.6 s, speech 1.9 s, text 151 s (1830-1940 steps); total 159 s. The validation loss is taken
# on the whole held-out tenth (1,742 windows, ~2 s): 1.71 nats/char after 150 s of training.
DEFAULT = Budget(w2v_lines=None, w2v_epochs=10, cnn_epochs=10, cnn_train=None, speech_states=8, speech_iter=10,
                 speech_train_per_class=None, text_seconds=150.0, text_context=64, text_width=128, text_layers=2,
                 text_heads=4, text_tokens=300, text_val_windows=None)
QUICK = Budget(w2v_lines=3000, w2v_epochs=2, cnn_epochs=1, cnn_train=256, speech_states=4, speech_iter=2,
               speech_train_per_class=10, text_seconds=2.0, text_context=32, text_width=32, text_layers=1,
               text_heads=2, text_tokens=40, text_val_windows=8)


@dataclasses.dataclass
class Result:
    section: str
    status: str        # "ok", "skipped" or "failed"
    summary: str
    seconds: float


class Skip(Exception):
    """A section cannot run here (missing data or component); not an error."""


def _say(msg=""):
    print(msg, flush=True)


class Progress:
    """A progress bar: redrawn in place when stdout is a terminal, else one line per update."""

    def __init__(self, label, total, width=28):
        self.label, self.total, self.width = label, total, width
        self.tty = bool(getattr(sys.stdout, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self._open = False

    def update(self, done, note=""):
        dt = time.perf_counter() - self.t0
        frac = min(1.0, done / self.total) if self.total else 1.0
        if self.tty:
            n = int(self.width * frac)
            bar = "#" * n + "." * (self.width - n)
            sys.stdout.write(f"\r  {self.label} [{bar}] {done}/{self.total} {dt:6.1f}s {note}\033[K")
            sys.stdout.flush()
            self._open = True
        else:
            _say(f"  {self.label} {done}/{self.total} {dt:.1f}s {note}".rstrip())

    def close(self):
        if self._open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._open = False


# ----------------------------------------------------------------------------- word2vec
def _shakespeare():
    try:
        from pyaiml.datasets.shakespeare import load_tiny_shakespeare
    except ImportError as e:
        raise Skip(f"the bundled Tiny Shakespeare loader is not in this install ({e})") from None
    return load_tiny_shakespeare()


def section_word2vec(b: Budget) -> str:
    from pyaiml import get_num_threads
    from pyaiml.models import Word2Vec
    from pyaiml.text import simple_tokenize

    text = _shakespeare()
    # every line of the plays is a sentence; speaker tags ("ROMEO:") are dropped
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.rstrip().endswith(":")]
    if b.w2v_lines:
        lines = lines[:b.w2v_lines]
    sents = [s for s in (simple_tokenize(ln) for ln in lines) if s]
    n_words = sum(map(len, sents))
    _say(f"  corpus: Tiny Shakespeare (bundled), {len(sents):,} lines, {n_words:,} words; skip-gram, "
         f"negative sampling, 100 dimensions, window 5, {b.w2v_epochs} epochs, {get_num_threads()} threads")
    bar = Progress("epoch", b.w2v_epochs)

    class _Epochs:
        k = 0

        def on_epoch_end(self, model):
            self.k += 1
            bar.update(self.k, f"loss/word {model.get_latest_training_loss() / max(n_words, 1):.3f}")

    t0 = time.perf_counter()
    model = Word2Vec(sents, vector_size=100, window=5, min_count=3, sg=1, negative=5, epochs=b.w2v_epochs,
                     workers=get_num_threads(), seed=1, compute_loss=True, callbacks=[_Epochs()])
    bar.close()
    dt = time.perf_counter() - t0
    wv = model.wv
    _say(f"  {len(wv):,} words in the vocabulary, trained in {dt:.1f} s. Nearest neighbours (cosine similarity):")
    shown = []
    for w in ("king", "love", "night", "death"):
        if w not in wv:
            continue
        near = wv.most_similar(w, topn=6)
        shown.append(f"{w}: {near[0][0]}")
        _say(f"    {w:>6} -> " + ", ".join(f"{k} ({s:.2f})" for k, s in near))

    _say("\n  The mission's sample (gensim trains on characters here and raises KeyError; pyaiml tokenises "
         "the strings and\n  averages the words of a phrase):")
    sentences = ["I love machine learning", "Machine learning is awesome", "I hate machine learning",
                 "Machine learning is difficult"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one-time "plain strings are tokenised" notice
        tiny = Word2Vec(sentences, vector_size=100, window=5, min_count=1, workers=4)
    v = tiny.wv["machine learning"]
    _say(f"    model.wv['machine learning'][:8] = {np.array2string(v[:8], precision=4, separator=', ')} "
         f"(shape {v.shape})")
    return f"{len(wv):,} words; " + ", ".join(shown[:3])


# ----------------------------------------------------------------------------- cnn
def mission_cnn():
    """The tutorial's image-recognition CNN, layer for layer."""
    from pyaiml.keras.layers import Conv2D, Dense, Flatten, MaxPooling2D
    from pyaiml.keras.models import Sequential

    model = Sequential()
    model.add(Conv2D(32, (3, 3), activation="relu", input_shape=(32, 32, 3)))
    model.add(MaxPooling2D((2, 2)))
    model.add(Conv2D(64, (3, 3), activation="relu"))
    model.add(MaxPooling2D((2, 2)))
    model.add(Flatten())
    model.add(Dense(10, activation="softmax"))
    return model


def digits_32x32x3(seed=0):
    """The bundled digits, stratified 80/20 split, each 8x8 image upscaled 4x (nearest
    neighbour) and repeated over 3 channels: (n, 32, 32, 3) float32 in [0, 1], int labels."""
    from pyaiml.datasets import load_digits
    from pyaiml.keras import utils

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    xtr, xte, ytr, yte = utils.stratified_split(x, y, test_size=0.2, seed=seed)
    up = lambda a: np.ascontiguousarray(np.repeat(np.repeat(np.repeat(a, 4, axis=1), 4, axis=2), 3, axis=3))  # noqa: E731
    return up(xtr), up(xte), ytr, yte


def section_cnn(b: Budget) -> str:
    from pyaiml.keras import utils

    utils.set_random_seed(0)
    X_train, X_test, ytr, yte = digits_32x32x3()
    if b.cnn_train:
        X_train, ytr = X_train[:b.cnn_train], ytr[:b.cnn_train]
    y_train, y_test = utils.to_categorical(ytr, 10), utils.to_categorical(yte, 10)
    _say(f"  data: bundled 8x8 digits (UCI) upscaled to 32x32x3, {len(X_train)} training / {len(X_test)} test "
         f"images; {b.cnn_epochs} epochs, batch 32, Adam")
    model = mission_cnn()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(X_train, y_train, epochs=b.cnn_epochs, batch_size=32, verbose=1)
    dt = time.perf_counter() - t0
    loss, acc = model.evaluate(X_test, y_test, verbose=0)
    pred = model.predict(X_test, verbose=0).argmax(1)
    wrong = int((pred != yte).sum())
    _say(f"  test accuracy {acc:.4f} ({len(yte) - wrong}/{len(yte)} images right), test loss {loss:.4f}; "
         f"{model.count_params():,} parameters trained in {dt:.1f} s")
    return f"test accuracy {acc:.1%} ({len(yte)} digits)"


# ----------------------------------------------------------------------------- speech
def section_speech(b: Budget, fsdd=None) -> str:
    from pyaiml.audio.features import mfcc_features
    from pyaiml.datasets.fsdd import load_fsdd
    from pyaiml.hmm import HMMClassifier

    path, source, tried = find_fsdd(fsdd)
    if path is None:
        _say(f"  FSDD not found (looked in {', '.join(tried)}).")
        _say(f"  To run this section, {FSDD_HINT}.")
        raise Skip("FSDD not found; see the hint above")
    if not holds_fsdd(path):
        raise FileNotFoundError(f"{source} points at {path}, which holds no .wav files (nor a recordings/ folder "
                                f"of them); {FSDD_HINT}")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable files are listed in ds.skipped
        ds = load_fsdd(path, on_error="warn")
    train, test = ds.split()
    if b.speech_train_per_class:
        train = np.concatenate([train[ds.digits[train] == d][:b.speech_train_per_class] for d in range(10)])
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"FSDD at {path}: the official split leaves {len(train)} training and {len(test)} test "
                         "recordings; both must be non-empty")
    use = np.concatenate([train, test])
    feats = {}
    bar = Progress("MFCC", len(use))
    step = -(-len(use) // (20 if bar.tty else 4))
    for k, i in enumerate(use):
        feats[int(i)] = mfcc_features(ds.signals[i], int(ds.rates[i]), name=ds.filenames[i])
        if (k + 1) % step == 0 or k + 1 == len(use):
            bar.update(k + 1)
    bar.close()
    n_spk = len(set(ds.speakers.tolist()))
    _say(f"  data: FSDD at {path} ({source}), {len(ds)} recordings of {n_spk} speakers; official split: "
         f"{len(train)} training, {len(test)} test; 39 MFCC features (+deltas, CMVN) in {time.perf_counter() - t0:.1f} s")
    Xtr = [feats[int(i)] for i in train]
    Xte = [feats[int(i)] for i in test]
    ytr, yte = ds.digits[train], ds.digits[test]
    t1 = time.perf_counter()
    _say(f"  model: pyaiml.hmm.HMMClassifier, {b.speech_states} left-right states per digit, diagonal "
         f"Gaussians, {b.speech_iter} Baum-Welch iterations")
    clf = HMMClassifier(n_states=b.speech_states, n_iter=b.speech_iter, random_state=0).fit(Xtr, ytr)
    pred = np.asarray(clf.predict(Xte))
    dt = time.perf_counter() - t1
    acc = float(np.mean(pred == yte))
    per = "  ".join(f"{d}:{np.mean(pred[yte == d] == d):.0%}" for d in range(10) if np.any(yte == d))
    _say(f"  test accuracy {acc:.4f} ({int((pred == yte).sum())}/{len(yte)} recordings); trained and scored in "
         f"{dt:.1f} s")
    _say(f"  per digit: {per}")
    return f"test accuracy {acc:.1%} ({len(yte)} recordings)"


# ----------------------------------------------------------------------------- text
def section_text(b: Budget) -> str:
    try:
        from pyaiml.seq import CharTokenizer, TransformerLM
    except ImportError as e:
        raise Skip(f"the Transformer language model (pyaiml.seq) is not in this install ({e})") from None
    from pyaiml.keras import optimizers
    from pyaiml.keras.utils import set_random_seed

    text = _shakespeare()
    n_val = len(text) // 10  # the usual 90/10 split, no shuffling
    train, val = text[:-n_val], text[-n_val:]
    set_random_seed(0)
    tok = CharTokenizer.from_text(text)
    tr_ids, va_ids = tok.encode(train), tok.encode(val)
    lm = TransformerLM(tokenizer=tok, context=b.text_context, width=b.text_width, num_layers=b.text_layers,
                       num_heads=b.text_heads)
    lm.compile(optimizers.Adam(2e-3, global_clipnorm=1.0))
    n_chars = len(tok.chars)
    _say(f"  corpus: Tiny Shakespeare (bundled), {len(text):,} characters ({n_chars} distinct), 90/10 split; "
         f"model: {b.text_layers} causal Transformer blocks, width {b.text_width}, {b.text_heads} heads, context "
         f"{b.text_context}, {lm.count_params():,} parameters; training for {b.text_seconds:.0f} s")
    before = lm.evaluate_ids(va_ids, max_windows=b.text_val_windows)
    tty = bool(getattr(sys.stdout, "isatty", lambda: False)())
    bar = Progress("seconds", int(b.text_seconds))
    last = [-1e9]

    def log(line):
        import json

        rec = json.loads(line)
        now = time.perf_counter()
        if tty or now - last[0] >= 10.0:  # a line every ~10 s when not on a terminal
            last[0] = now
            bar.update(min(int(rec["seconds"]), int(b.text_seconds)),
                       f"step {rec['step']}, train loss {rec['train_loss']:.3f} nats/char")

    lm.fit_text(tr_ids, None, batch_size=32, steps=10 ** 9, eval_every=5, time_budget=b.text_seconds, seed=0,
                log=log)
    h = lm.history[-1]
    bar.update(min(int(h["seconds"]), int(b.text_seconds)),
               f"step {h['step']}, train loss {h['train_loss']:.3f} nats/char")
    bar.close()
    after = lm.evaluate_ids(va_ids, max_windows=b.text_val_windows)
    _say(f"  {h['step']} steps ({h['step'] * 32 * b.text_context:,} characters seen) in {h['seconds']:.0f} s; "
         f"validation loss {before:.3f} -> {after:.3f} nats/char (a uniform guess over the {n_chars} characters: "
         f"{math.log(n_chars):.3f})")
    t = time.perf_counter()
    sample = lm.generate("ROMEO:\n", max_new_tokens=b.text_tokens, temperature=0.8, top_k=40, seed=1)
    dt = time.perf_counter() - t
    _say(f"  sample (prompt 'ROMEO:\\n', temperature 0.8, top-k 40, {b.text_tokens / dt:.0f} characters/s):")
    _say("    | " + sample.replace("\n", "\n    | "))
    return f"val loss {after:.2f} nats/char (from {before:.2f})"


# ----------------------------------------------------------------------------- driver
TITLES = {
    "word2vec": "Word embeddings: Word2Vec on Tiny Shakespeare",
    "cnn": "Image recognition: the mission's Keras CNN on the bundled digits",
    "speech": "Speech recognition: HMM digit recognizer on FSDD",
    "text": "Text generation: a character-level Transformer on Tiny Shakespeare",
}


def parse_only(only):
    """'word2vec,cnn' -> ['word2vec', 'cnn'] in demo order; ValueError on unknown names."""
    if only is None:
        return list(SECTIONS)
    names = [s.strip().lower() for s in str(only).split(",") if s.strip()]
    bad = [s for s in names if s not in SECTIONS]
    if bad or not names:
        raise ValueError(f"--only must be a comma-separated subset of {','.join(SECTIONS)}. Received {only!r}")
    return [s for s in SECTIONS if s in names]


def run_demo(sections=SECTIONS, fsdd=None, budget: Budget = DEFAULT) -> list[Result]:
    """Run the sections in order; each one's failure is reported and the others still run."""
    results = []
    for k, name in enumerate(sections, 1):
        _say(f"\n[{k}/{len(sections)}] {TITLES[name]}")
        t0 = time.perf_counter()
        try:
            if name == "word2vec":
                summary = section_word2vec(budget)
            elif name == "cnn":
                summary = section_cnn(budget)
            elif name == "speech":
                summary = section_speech(budget, fsdd)
            else:
                summary = section_text(budget)
            status = "ok"
        except Skip as e:
            status, summary = "skipped", str(e)
            _say(f"  skipped: {e}")
        except Exception as e:  # reported, and the demo goes on with the next section
            status, summary = "failed", f"{type(e).__name__}: {e}"
            _say("  FAILED:\n" + "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:]).rstrip())
        results.append(Result(name, status, summary, time.perf_counter() - t0))
    return results


def format_summary(results, total) -> str:
    w = max([len(r.summary) for r in results] + [6])
    w = min(w, 70)
    lines = [f"{'section':<10} {'status':<8} {'result':<{w}} {'seconds':>8}", "-" * (30 + w)]
    for r in results:
        s = r.summary if len(r.summary) <= w else r.summary[:w - 3] + "..."
        lines.append(f"{r.section:<10} {r.status:<8} {s:<{w}} {r.seconds:8.1f}")
    lines.append(f"{'total':<10} {'':<8} {'':<{w}} {total:8.1f}")
    return "\n".join(lines)


def main(only=None, fsdd=None, quick=False, threads=None) -> int:
    """Entry point of ``pyaiml demo``; returns the exit status (1 if a section failed)."""
    import pyaiml

    try:
        sections = parse_only(only)
    except ValueError as e:
        print(f"pyaiml demo: {e}", file=sys.stderr)
        return 2
    if threads is not None:
        pyaiml.set_num_threads(threads)
    info = pyaiml.backend_info()
    if info["backend_env"]:
        backend = f"PYAIML_BACKEND={info['backend_env']}"
    elif info["cpp"]["available"]:
        backend = f"C++ ({info['isa']})"
    else:
        backend = "Numba" if info["numba"]["available"] else "NumPy"
    _say(f"pyaiml {pyaiml.__version__} demo: {', '.join(sections)}; {'quick' if quick else 'full'} run, "
         f"{pyaiml.get_num_threads()} threads, backend {backend}")
    t0 = time.perf_counter()
    results = run_demo(sections, fsdd, QUICK if quick else DEFAULT)
    total = time.perf_counter() - t0
    _say("\nSummary\n" + format_summary(results, total))
    return 1 if any(r.status == "failed" for r in results) else 0
