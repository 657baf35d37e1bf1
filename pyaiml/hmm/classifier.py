"""Isolated-word recognizer: one HMM per class, decision by the largest log-likelihood.

What it is: :class:`HMMClassifier`, a scikit-learn style classifier over variable-length
feature sequences (e.g. pyaiml.audio.mfcc_features output, (n_frames, n_features) each).
Every class gets its own GaussianHMM or GMMHMM (pyaiml.hmm), left-right (Bakis) by default,
started flat (every training sequence cut into n_states equal segments; state i starts from
the mean and variance of the i-th segments, as HTK's HCompV/flat start does), then trained by
Baum-Welch. Classes train in parallel Python threads: the HMM kernels release the GIL.
What it is not: a continuous-speech decoder (no language model, no word graph) and not a
discriminative trainer (each class model sees only its own examples).
Files: ``save`` writes one .npz (config as JSON, the classes, each class model in the HMM
models' own save format); ``load`` checks every part (each model as ``pyaiml.hmm.load`` does,
and that it is the model the config describes) and raises ``ValueError`` naming the file.
Test: tests/test_speech_hmm.py (FSDD parts skip when FSDD is not found; see tests/conftest.py),
tests/test_io_hmm_files.py; speed against hmmlearn: python -m pyaiml.cli bench speech.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pyaiml._io import atomic_savez, bad_file, npz_bytes, read_npz
from pyaiml.hmm.base import _json_meta, _model_from_arrays, left_right
from pyaiml.hmm.models import GMMHMM, GaussianHMM
from pyaiml.ops.hmm import ScalingUnderflowError

EMISSIONS = ("gaussian", "gmm")
TOPOLOGIES = ("left-right", "ergodic")
_FORMAT = "pyaiml.hmm.HMMClassifier/1"


def _as_sequences(X, op, n_features=None):
    """Validate a list of 2-D float arrays -> list of float64 C arrays (1-D -> one column)."""
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype != object:
        raise ValueError(f"HMMClassifier.{op}: X must be a list of sequences (arrays of shape "
                         f"(n_frames, n_features)), not one 2-D array. Received an array of shape {X.shape}; "
                         f"wrap a single sequence as [X]")
    try:
        seqs = list(X)
    except TypeError:
        raise ValueError(f"HMMClassifier.{op}: X must be a list of sequences. Received {type(X).__name__}") from None
    if not seqs:
        raise ValueError(f"HMMClassifier.{op}: X must hold at least one sequence. Received an empty list")
    out = []
    for i, x in enumerate(seqs):
        a = np.asarray(x)
        if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"HMMClassifier.{op}: X[{i}] must be a numeric array. Received dtype {a.dtype}")
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(f"HMMClassifier.{op}: X[{i}] must be 2-D (n_frames, n_features). Received shape {a.shape}")
        if a.shape[0] == 0:
            raise ValueError(f"HMMClassifier.{op}: X[{i}] is empty (shape {a.shape}); every sequence needs a frame")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"HMMClassifier.{op}: X[{i}] must be finite. Received NaN or inf values")
        out.append(np.ascontiguousarray(a, dtype=np.float64))
    dims = sorted({a.shape[1] for a in out})
    if len(dims) > 1:
        raise ValueError(f"HMMClassifier.{op}: all sequences must have the same number of features. "
                         f"Received {dims}")
    if n_features is not None and dims[0] != n_features:
        raise ValueError(f"HMMClassifier.{op}: X has {dims[0]} features per frame, but the model was fitted with "
                         f"{n_features}. Received sequences of shape (n_frames, {dims[0]})")
    return out


def _flat_start(seqs, K):
    """Per-state (mean, variance) from cutting every sequence into K equal segments (the
    first T % K segments one frame longer, as np.array_split). A state that no sequence
    reaches (all sequences shorter than K) takes the pooled statistics; one seen in a single
    frame takes the pooled variance. Vectorised (one-hot GEMMs): 8 ms instead of 84 ms per
    FSDD digit with a loop of array_split (measured)."""
    lens = np.array([len(x) for x in seqs])
    q, r = np.divmod(lens, K)
    sizes = q[:, None] + (np.arange(K)[None, :] < r[:, None])      # (S, K), rows sum to T_i
    state = np.repeat(np.tile(np.arange(K), len(seqs)), sizes.ravel())
    X = np.concatenate(seqs)
    H = np.zeros((len(X), K))
    H[np.arange(len(X)), state] = 1.0
    n = H.sum(0)
    g_mu, g_var = X.mean(0), X.var(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = (H.T @ X) / n[:, None]
        var = (H.T @ (X * X)) / n[:, None] - mu * mu
    var = np.maximum(var, 0.0)
    mu[n == 0] = g_mu
    var[n <= 1] = g_var
    return mu, var


def _one_blas_thread():
    """Pin NumPy's BLAS to one thread while the class threads run (restored afterwards).

    GMMHMM's and full/tied GaussianHMM's M-step statistics are NumPy products (posteriors.T @ X;
    diagonal and spherical GaussianHMM get theirs from the E-step kernel). With
    OpenBLAS threaded on top of the class threads, on a 2-core machine shared with other
    work, one (8 x 9000) @ (9000 x 39) product took 0.16 s instead of 0.004 s with one BLAS
    thread (measured; 40x), and it dominated training (8.1 of 9.2 s for one digit model).
    Needs threadpoolctl; without it this is a no-op.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class HMMClassifier:
    """One hidden Markov model per class; predicts the class whose model gives the sequence the
    highest log-likelihood.

    Parameters
    ----------
    n_states : int >= 1 (8). States per class model.
    emission : "gaussian" (one Gaussian per state) or "gmm" (``n_mix`` Gaussians per state).
    n_mix : int >= 1 (3), mixtures per state with emission="gmm".
    covariance_type : "diag" (default), "spherical", "full" or "tied" (as pyaiml.hmm models).
    topology : "left-right" (Bakis: stay or move one state on, start in state 0; the
        structural zeros stay zero through EM) or "ergodic" (every transition allowed).
    n_iter : int (15), Baum-Welch iterations per class; tol : float (1e-2), stop earlier when
        the log-likelihood gain falls below it.
    min_covar : variance floor (1e-3); var_floor : added to the flat-start variances (1e-2).
    random_state : int or None; class c's model uses the seed (random_state, c) so results do
        not depend on the thread count.
    n_jobs : threads training/scoring classes at once (None: pyaiml.get_num_threads()).
    implementation : "scaling" (default) or "log" forward-backward (pyaiml.hmm); a class model
        whose scaled recursion underflows on some sequence is trained or scored in log space
        instead (exact), so the default never loses a sequence. Measured on one
        FSDD digit model (15 iterations, one thread): 0.31-0.40 s scaling, 0.45-0.67 s log,
        the same log-likelihood to 1e-10 (CMVN features keep the scaled recursion in range).

    Attributes (after fit)
    ----------------------
    classes_ : array, the sorted distinct labels
    models_ : list of fitted GaussianHMM / GMMHMM, one per class in classes_ order
    n_features_in_ : int
    """

    def __init__(self, n_states=8, emission="gaussian", n_mix=3, covariance_type="diag", topology="left-right",
                 n_iter=15, tol=1e-2, min_covar=1e-3, var_floor=1e-2, random_state=0, n_jobs=None,
                 implementation="scaling"):
        self.n_states = n_states
        self.emission = emission
        self.n_mix = n_mix
        self.covariance_type = covariance_type
        self.topology = topology
        self.n_iter = n_iter
        self.tol = tol
        self.min_covar = min_covar
        self.var_floor = var_floor
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.implementation = implementation
        self._validate_config()

    # ----- configuration -------------------------------------------------------------
    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in ("n_states", "emission", "n_mix", "covariance_type", "topology",
                                              "n_iter", "tol", "min_covar", "var_floor", "random_state",
                                              "n_jobs", "implementation")}

    def set_params(self, **kw):
        for k, v in kw.items():
            if k not in self.get_params():
                raise ValueError(f"HMMClassifier.set_params: unknown parameter {k!r}")
            setattr(self, k, v)
        self._validate_config()
        return self

    def _validate_config(self):
        def _int(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"HMMClassifier: {name} must be an integer >= {lo}. Received {v!r}")
        _int("n_states", 1)
        _int("n_mix", 1)
        _int("n_iter", 1)
        if self.emission not in EMISSIONS:
            raise ValueError(f"HMMClassifier: emission must be one of {EMISSIONS}. Received {self.emission!r}")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"HMMClassifier: topology must be one of {TOPOLOGIES}. Received {self.topology!r}")
        if self.covariance_type not in ("diag", "spherical", "full", "tied"):
            raise ValueError(f"HMMClassifier: covariance_type must be 'diag', 'spherical', 'full' or 'tied'. "
                             f"Received {self.covariance_type!r}")
        if self.n_jobs is not None:
            _int("n_jobs", 1)
        for name in ("min_covar", "var_floor"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float, np.floating)) and np.isfinite(v) and v >= 0):
                raise ValueError(f"HMMClassifier: {name} must be a finite number >= 0. Received {v!r}")

    def _threads(self, n):
        if self.n_jobs is not None:
            return max(1, min(int(self.n_jobs), n))
        try:
            import pyaiml
            t = int(pyaiml.get_num_threads())
        except Exception:  # pragma: no cover - extension without the pool getter
            t = os.cpu_count() or 1
        return max(1, min(t, n))

    def _seed(self, c):
        if self.random_state is None:
            return None
        return int(np.random.SeedSequence([int(self.random_state), int(c)]).generate_state(1)[0])

    # ----- one class model -----------------------------------------------------------
    def _new_model(self, seed):
        K = int(self.n_states)
        common = dict(n_components=K, covariance_type=self.covariance_type, min_covar=self.min_covar,
                      n_iter=int(self.n_iter), tol=self.tol, random_state=seed, implementation=self.implementation)
        if self.emission == "gaussian":
            return GaussianHMM(init_params="", params="stmc", **common)
        return GMMHMM(n_mix=int(self.n_mix), init_params="", params="stmcw", **common)

    def _init_model(self, m, seqs, seed, start=None):
        K = int(self.n_states)
        if self.topology == "left-right":
            m.startprob_, m.transmat_ = left_right(K)
        else:
            m.startprob_ = np.full(K, 1.0 / K)
            m.transmat_ = np.full((K, K), 1.0 / K)
        mu, var = _flat_start(seqs, K) if start is None else start  # start: (mu, var) of a distributed fit
        D = mu.shape[1]
        var = var + float(self.var_floor)
        ct = self.covariance_type
        if self.emission == "gaussian":
            m.means_ = mu
            if ct == "diag":
                m.covars_ = var
            elif ct == "spherical":
                m.covars_ = var.mean(1)
            elif ct == "full":
                m.covars_ = np.stack([np.diag(v) for v in var])
            else:
                m.covars_ = np.diag(var.mean(0))
            return m
        M = int(self.n_mix)
        rng = np.random.default_rng(seed)
        m.weights_ = np.full((K, M), 1.0 / M)
        # the mixture components of a state start around its segment mean, half a standard
        # deviation apart (a deterministic function of the seed)
        m.means_ = mu[:, None, :] + 0.5 * np.sqrt(var)[:, None, :] * rng.standard_normal((K, M, D))
        if ct == "diag":
            m.covars_ = np.repeat(var[:, None, :], M, axis=1)
        elif ct == "spherical":
            m.covars_ = np.repeat(var.mean(1)[:, None], M, axis=1)
        elif ct == "full":
            m.covars_ = np.stack([np.stack([np.diag(v)] * M) for v in var])
        else:
            m.covars_ = np.stack([np.diag(v) for v in var])
        return m

    def _fit_class(self, c, seqs):
        seed = self._seed(c)
        m = self._init_model(self._new_model(seed), seqs, seed)
        with warnings.catch_warnings():
            # a left-right model's last-state row never sees a transition out; the kernels keep
            # it and warn, which is expected here
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                m.fit(seqs)
            except ScalingUnderflowError:
                # the scaled recursion lost a sequence: train this class again in log space
                m = self._init_model(self._new_model(seed), seqs, seed)
                m.implementation = "log"
                m.fit(seqs)
                m.implementation = self.implementation
        return m

    @staticmethod
    def _score(m, seqs):
        """Per-sequence scores of model m; in log space where the scaled recursion underflows."""
        try:
            return np.asarray(m.score(seqs, per_sequence=True), dtype=np.float64)
        except ScalingUnderflowError:
            impl, m.implementation = m.implementation, "log"
            try:
                return np.asarray(m.score(seqs, per_sequence=True), dtype=np.float64)
            finally:
                m.implementation = impl

    # ----- estimator API -------------------------------------------------------------
    def fit(self, X, y, distribute=None):
        """Train one model per class.

        X : list of arrays, shape (n_frames_i, n_features) (the same n_features for all)
        y : labels, one per sequence (ints or strings)
        distribute : None, "data_parallel" or a pyaiml.distributed.DataParallel: X, y are this
            rank's shard; the flat start and every EM iteration sum their statistics over all
            ranks (pyaiml.distributed.hmm.fit_classifier), giving the single-process result.
        """
        if distribute is not None:
            from pyaiml.distributed.hmm import fit_classifier
            return fit_classifier(self, X, y, distribute)
        self._validate_config()
        seqs = _as_sequences(X, "fit")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(seqs):
            raise ValueError(f"HMMClassifier.fit: y must hold one label per sequence ({len(seqs)}). "
                             f"Received shape {y.shape}")
        classes = np.unique(y)
        groups = [[s for s, lab in zip(seqs, y) if lab == c] for c in classes]
        with _one_blas_thread(), ThreadPoolExecutor(self._threads(len(classes))) as ex:
            models = list(ex.map(self._fit_class, range(len(classes)), groups))
        self.classes_ = classes
        self.models_ = models
        self.n_features_in_ = seqs[0].shape[1]
        return self

    def _check_fitted(self, op):
        if not hasattr(self, "models_"):
            raise ValueError(f"HMMClassifier.{op}: this classifier is not fitted yet; call fit first")

    def log_likelihoods(self, X):
        """(n_sequences, n_classes) log-likelihood of every sequence under every class model."""
        self._check_fitted("predict")
        seqs = _as_sequences(X, "predict", self.n_features_in_)
        with _one_blas_thread(), ThreadPoolExecutor(self._threads(len(self.models_))) as ex:
            cols = list(ex.map(lambda m: self._score(m, seqs), self.models_))
        L = np.stack(cols, axis=1)
        bad = np.flatnonzero(~np.isfinite(L).any(axis=1))
        if bad.size:
            raise ValueError(f"HMMClassifier.predict: sequence X[{int(bad[0])}] has zero likelihood under every "
                             f"class model (length {len(seqs[bad[0]])} frames)")
        return L

    def predict_proba(self, X):
        """Softmax over the per-class log-likelihoods: (n_sequences, n_classes)."""
        L = self.log_likelihoods(X)
        L = L - L.max(axis=1, keepdims=True)
        P = np.exp(L)
        return P / P.sum(axis=1, keepdims=True)

    def predict(self, X):
        L = self.log_likelihoods(X)
        return self.classes_[np.argmax(L, axis=1)]

    def score(self, X, y):
        """Accuracy on (X, y)."""
        y = np.asarray(y)
        n = len(X) if hasattr(X, "__len__") else -1
        if y.ndim != 1 or len(y) != n:
            raise ValueError(f"HMMClassifier.score: y must hold one label per sequence ({n}). Received shape {y.shape}")
        return float(np.mean(self.predict(X) == y))

    # ----- persistence (no pickle) ---------------------------------------------------
    def save(self, path, key=None):
        """One ``.npz``: the configuration, classes and every class model (each in the HMM
        models' own save format); written atomically, read back without pickle by :meth:`load`.
        ``key``: encrypt it (AES-256-GCM, see pyaiml.privacy)."""
        self._check_fitted("save")
        path = os.fspath(path)
        arrays = {f"model_{i}": np.frombuffer(npz_bytes(**m._save_arrays()), dtype=np.uint8)
                  for i, m in enumerate(self.models_)}
        cfg = {k: (int(v) if isinstance(v, np.integer) else v) for k, v in self.get_params().items()}
        arrays["classes"] = np.asarray(self.classes_)
        if arrays["classes"].dtype.kind not in "iufU":
            raise ValueError(f"HMMClassifier.save: labels must be numbers or strings to be saved. Received dtype "
                             f"{arrays['classes'].dtype}")
        meta = {"format": _FORMAT, "config": cfg, "n_features": int(self.n_features_in_)}
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        atomic_savez(path, key=key, inner="hmm-classifier", **arrays)
        return path

    @classmethod
    def load(cls, path, key=None):
        """Read a classifier written by :meth:`save`.

        Each class model is checked as ``pyaiml.hmm.load`` checks a model file, and against
        the configuration (emission, states, covariance type, features); distinct labels, one
        model per label, no other members. Anything amiss is a ``ValueError`` naming the file."""
        op = "HMMClassifier.load"
        path = os.fspath(path)
        z = read_npz(path, op, key=key, inner="hmm-classifier")
        if "__meta__" not in z:
            raise bad_file(op, path, "no __meta__ entry, so not a saved HMMClassifier")
        meta = _json_meta(z["__meta__"], op, path)
        if meta.get("format") != _FORMAT:
            raise bad_file(op, path, f"format {meta.get('format')!r}, expected {_FORMAT!r}")
        cfg = meta.get("config")
        if not isinstance(cfg, dict):
            raise bad_file(op, path, "config must be a JSON object")
        try:
            clf = cls(**cfg)
        except (ValueError, TypeError) as e:
            raise bad_file(op, path, f"its config is invalid: {type(e).__name__}: {e}") from None
        D = meta.get("n_features")
        if isinstance(D, bool) or not isinstance(D, int) or D < 1:
            raise bad_file(op, path, f"n_features must be an integer >= 1. Received {D!r}")
        classes = z.get("classes")
        if classes is None or classes.ndim != 1 or classes.size == 0 or classes.dtype.kind not in "iufU":
            raise bad_file(op, path, "classes must be a non-empty 1-D array of numbers or strings")
        if len(np.unique(classes)) != len(classes):
            raise bad_file(op, path, "classes must be distinct")
        want = {"__meta__", "classes"} | {f"model_{i}" for i in range(len(classes))}
        if set(z) != want:
            raise bad_file(op, path, f"members {sorted(set(z) ^ want)} are missing or unexpected for "
                                     f"{len(classes)} classes")
        kind = GaussianHMM if clf.emission == "gaussian" else GMMHMM
        models = []
        for i in range(len(classes)):
            label = f"{path} (model_{i})"
            raw = z[f"model_{i}"]
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise bad_file(op, path, f"model_{i} must be the bytes of a model file. Received {raw.dtype} "
                                         f"{raw.shape}")
            m = _model_from_arrays(read_npz(raw.tobytes(), op, label), op, label)
            if type(m) is not kind or m.n_components != clf.n_states or m.covariance_type != clf.covariance_type \
                    or (kind is GMMHMM and m.n_mix != clf.n_mix):
                raise bad_file(op, label, f"a {type(m).__name__} with {m.n_components} states and "
                                          f"{m.covariance_type!r} covariances, but the config describes "
                                          f"{kind.__name__} models with {clf.n_states} states and "
                                          f"{clf.covariance_type!r} covariances")
            missing = [n for n in m._saved_attributes() if not hasattr(m, n)]
            if missing:
                raise bad_file(op, label, f"the model is not fitted (no {missing})")
            if m.n_features != D:
                raise bad_file(op, label, f"the model has {m.n_features} features, the classifier {D}")
            models.append(m)
        clf.classes_ = classes
        clf.models_ = models
        clf.n_features_in_ = D
        return clf
