"""Spoken-word recipes: a 1-D CNN over frame sequences on pyaiml.keras, and the input shaping
it needs.

What it is: :func:`pad_or_crop` (variable-length (n_frames, n_features) sequences -> one
(N, frames, n_features) float32 batch), :func:`build_cnn` (the mission's Conv1D stack with the
convolutions running along time and GlobalAveragePooling1D in place of Flatten, so the input
length only matters for cost), :class:`SpecAugment` (time and feature masking, redrawn every
epoch) and :class:`CNNClassifier` (fit / predict / predict_proba / score over lists of
sequences, the counterpart of pyaiml.hmm.HMMClassifier; ``spec_augment=`` and an
``n_estimators`` seed ensemble are its speaker-robustness options).
What it is not: a feature extractor (use pyaiml.audio.mfcc_features or log_mel_spectrogram)
nor a streaming recognizer.
Test: tests/test_speech_cnn.py (FSDD parts skip when FSDD is not found; see tests/conftest.py).
"""
from __future__ import annotations

import numpy as np

ALIGNS = ("center", "start")


def pad_or_crop(seqs, n_frames: int, *, align: str = "center", value: float = 0.0) -> np.ndarray:
    """Stack sequences into (N, n_frames, n_features) float32.

    Longer sequences keep their ``n_frames`` central frames (align="center") or their first
    ones ("start"); shorter ones are padded with ``value`` on both sides (center; the extra
    frame goes at the end) or at the end (start). With per-utterance CMVN features, 0 is the
    utterance mean.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"pad_or_crop: n_frames must be an integer >= 1. Received {n_frames!r}")
    if align not in ALIGNS:
        raise ValueError(f"pad_or_crop: align must be one of {ALIGNS}. Received {align!r}")
    seqs = list(seqs)
    if not seqs:
        raise ValueError("pad_or_crop: seqs must hold at least one sequence. Received an empty list")
    arrs = []
    for i, s in enumerate(seqs):
        a = np.asarray(s, dtype=np.float32)
        if a.ndim != 2 or a.shape[0] == 0:
            raise ValueError(f"pad_or_crop: seqs[{i}] must be 2-D (n_frames, n_features), non-empty. "
                             f"Received shape {a.shape}")
        arrs.append(a)
    dims = sorted({a.shape[1] for a in arrs})
    if len(dims) > 1:
        raise ValueError(f"pad_or_crop: all sequences must have the same number of features. Received {dims}")
    n_frames = int(n_frames)
    out = np.full((len(arrs), n_frames, dims[0]), value, dtype=np.float32)
    for i, a in enumerate(arrs):
        T = a.shape[0]
        if T >= n_frames:
            s0 = (T - n_frames) // 2 if align == "center" else 0
            out[i] = a[s0:s0 + n_frames]
        else:
            d0 = (n_frames - T) // 2 if align == "center" else 0
            out[i, d0:d0 + T] = a
    return out


def build_cnn(n_frames: int, n_features: int, n_classes: int, *, filters: int = 64, kernel_size: int = 3,
              hidden: int = 0, dropout: float = 0.0, learning_rate: float = 1e-3):
    """The mission's Conv1D model for (frames, features) input, compiled.

    Conv1D(filters, kernel_size, relu) -> MaxPooling1D(2) -> Conv1D(filters, kernel_size, relu)
    -> MaxPooling1D(2) -> GlobalAveragePooling1D -> [Dense(hidden, relu) -> Dropout]
    -> Dense(n_classes, softmax); Adam(learning_rate), categorical cross-entropy, accuracy.
    The convolutions slide along time with the features as channels.
    """
    from pyaiml import keras

    need = 2 * (kernel_size - 1) + 4
    if n_frames < need:
        raise ValueError(f"build_cnn: n_frames must be >= {need} for kernel_size {kernel_size} and two pooling "
                         f"steps. Received {n_frames}")
    layers = [
        keras.layers.Conv1D(filters, kernel_size, activation="relu", input_shape=(int(n_frames), int(n_features))),
        keras.layers.MaxPooling1D(pool_size=2),
        keras.layers.Conv1D(filters, kernel_size, activation="relu"),
        keras.layers.MaxPooling1D(pool_size=2),
        keras.layers.GlobalAveragePooling1D(),
    ]
    if hidden:
        layers.append(keras.layers.Dense(int(hidden), activation="relu"))
        if dropout:
            layers.append(keras.layers.Dropout(float(dropout)))
    layers.append(keras.layers.Dense(int(n_classes), activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


class SpecAugment:
    """SpecAugment-style masking (Park et al., 2019) for (N, frames, features) batches.

    Each sequence gets ``time_masks`` spans of 0..``time_width`` consecutive frames and
    ``feature_masks`` spans of 0..``feature_width`` consecutive features set to ``value``
    (0: the mean of CMVN-normalised features); widths and positions are drawn uniformly per
    sequence and per call. ``feature_groups`` > 1 splits the feature axis into that many equal
    blocks and masks the same span in each: with ``mfcc_features``' 39 columns (13 MFCCs, their
    deltas and delta-deltas) ``feature_groups=3`` hides a band of cepstra with its deltas.
    :class:`CNNClassifier` applies it to its training batch afresh every epoch.
    """

    def __init__(self, time_masks=2, time_width=8, feature_masks=1, feature_width=4, feature_groups=3, value=0.0):
        for n, v in (("time_masks", time_masks), ("time_width", time_width), ("feature_masks", feature_masks),
                     ("feature_width", feature_width)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"SpecAugment: {n} must be an integer >= 0. Received {v!r}")
        if isinstance(feature_groups, bool) or not isinstance(feature_groups, (int, np.integer)) or feature_groups < 1:
            raise ValueError(f"SpecAugment: feature_groups must be an integer >= 1. Received {feature_groups!r}")
        if not np.isfinite(float(value)):
            raise ValueError(f"SpecAugment: value must be finite. Received {value!r}")
        self.time_masks, self.time_width = int(time_masks), int(time_width)
        self.feature_masks, self.feature_width = int(feature_masks), int(feature_width)
        self.feature_groups, self.value = int(feature_groups), float(value)

    def get_config(self):
        return {"time_masks": self.time_masks, "time_width": self.time_width, "feature_masks": self.feature_masks,
                "feature_width": self.feature_width, "feature_groups": self.feature_groups, "value": self.value}

    def __repr__(self):
        return "SpecAugment(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"

    def __call__(self, batch, rng):
        """A masked copy of ``batch`` (N, T, F); ``rng`` a numpy Generator."""
        B = np.array(batch, dtype=np.float32, copy=True)
        if B.ndim != 3:
            raise ValueError(f"SpecAugment: batch must be 3-D (N, frames, features). Received shape {B.shape}")
        N, T, F = B.shape
        G = self.feature_groups
        if F % G:
            raise ValueError(f"SpecAugment: feature_groups={G} must divide the {F} features per frame")
        Fg = F // G
        t_idx = np.arange(T)
        f_idx = np.arange(Fg)
        for _ in range(self.time_masks):
            w = rng.integers(0, min(self.time_width, T) + 1, size=N)
            t0 = (rng.random(N) * (T - w + 1)).astype(np.int64)
            m = (t_idx[None, :] >= t0[:, None]) & (t_idx[None, :] < (t0 + w)[:, None])
            B[m] = self.value
        for _ in range(self.feature_masks):
            w = rng.integers(0, min(self.feature_width, Fg) + 1, size=N)
            f0 = (rng.random(N) * (Fg - w + 1)).astype(np.int64)
            m = (f_idx[None, :] >= f0[:, None]) & (f_idx[None, :] < (f0 + w)[:, None])  # (N, Fg)
            m = np.tile(m, (1, G))  # the same band in every group
            B[np.broadcast_to(m[:, None, :], B.shape)] = self.value
        return B


class CNNClassifier:
    """1-D CNN word classifier over variable-length feature sequences.

    Parameters
    ----------
    n_frames : fixed input length (None: 1.2 x the 99th percentile of the training lengths,
        at least 16; 80 frames on FSDD); sequences are centre-cropped or padded to it
        (:func:`pad_or_crop`).
    filters, kernel_size, hidden (64), dropout (0.3), learning_rate : see :func:`build_cnn`.
        ``kernel_size`` may also be a tuple of sizes: member ``e`` of the ensemble
        (``n_estimators``) then uses ``kernel_size[e % len(kernel_size)]``, so the members
        differ in receptive field as well as in seed.
    epochs, batch_size : training schedule; random_state : seed for initialisation and
        shuffling (pyaiml.keras.utils.set_random_seed); verbose : passed to ``fit``.
    spec_augment : None (default), True (``SpecAugment()``'s defaults) or a
        :class:`SpecAugment`: masks redrawn for every epoch of training.
    n_estimators : int >= 1 (1). Train that many networks from seeds random_state,
        random_state + 1, ... and average their predicted probabilities (training and
        prediction cost grow in proportion).
    average_epochs : int >= 0 (0). Average each network's weights over its last that many
        epochs (stochastic weight averaging with Adam's constant rate) and keep the average;
        0 keeps the last epoch's weights.

    Speaker robustness, measured leave one speaker out on FSDD (examples/speech_digits.py
    --loso; figures in benchmarks/RESULTS.md): per-speaker CMVN of the features
    (pyaiml.audio.speaker_cmvn) and 0.9/1.1 speed-perturbed training copies
    (pyaiml.audio.speed_perturb) help most; ``spec_augment`` and ``n_estimators`` add to them.

    Attributes (after fit): classes_, model_ (the compiled keras Sequential; the first of
    the ensemble), models_ (all of them), n_frames_, n_features_in_, history_ (the first's).
    """

    def __init__(self, n_frames=None, filters=64, kernel_size=3, hidden=64, dropout=0.3, learning_rate=1e-3,
                 epochs=30, batch_size=32, random_state=0, verbose=0, spec_augment=None, n_estimators=1,
                 average_epochs=0):
        self.n_frames = n_frames
        self.filters = filters
        self.kernel_size = kernel_size
        self.hidden = hidden
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose
        self.spec_augment = spec_augment
        self.n_estimators = n_estimators
        self.average_epochs = average_epochs

    def _batch(self, X, op):
        try:
            seqs = list(X)
        except TypeError:
            raise ValueError(f"CNNClassifier.{op}: X must be a list of sequences. Received {type(X).__name__}") from None
        if not seqs:
            raise ValueError(f"CNNClassifier.{op}: X must hold at least one sequence. Received an empty list")
        if hasattr(self, "n_features_in_"):
            for i, s in enumerate(seqs):
                sh = np.shape(s)
                if len(sh) == 2 and sh[1] != self.n_features_in_:
                    raise ValueError(f"CNNClassifier.{op}: X[{i}] has {sh[1]} features per frame, but the model was "
                                     f"fitted with {self.n_features_in_}. Received shape {sh}")
        B = pad_or_crop(seqs, self.n_frames_ if hasattr(self, "n_frames_") else self._pick_frames(seqs))
        if not np.all(np.isfinite(B)):
            raise ValueError(f"CNNClassifier.{op}: X must be finite. Received NaN or inf values")
        return B

    def _pick_frames(self, seqs):
        if self.n_frames is not None:
            return int(self.n_frames)
        # FSDD official split, MFCC 39, 30 epochs, hidden 64 + dropout 0.3 (measured):
        # 59 frames (95th percentile) 98.0%, 80 frames (1.2 x 99th) 99.2% test accuracy
        lens = [np.shape(s)[0] for s in seqs]
        return max(16, int(np.ceil(1.2 * np.percentile(lens, 99))))

    def fit(self, X, y):
        from pyaiml import keras

        for k in ("n_frames_", "n_features_in_"):
            self.__dict__.pop(k, None)
        y = np.asarray(y)
        n = len(X) if hasattr(X, "__len__") else -1
        if y.ndim != 1 or len(y) != n:
            raise ValueError(f"CNNClassifier.fit: y must hold one label per sequence ({n}). Received shape {y.shape}")
        aug = self.spec_augment
        if aug is True:
            aug = SpecAugment()
        elif aug is not None and aug is not False and not isinstance(aug, SpecAugment):
            raise ValueError(f"CNNClassifier.fit: spec_augment must be None, True or a SpecAugment. Received {aug!r}")
        n_est = self.n_estimators
        if isinstance(n_est, bool) or not isinstance(n_est, (int, np.integer)) or n_est < 1:
            raise ValueError(f"CNNClassifier.fit: n_estimators must be an integer >= 1. Received {n_est!r}")
        n_avg = self.average_epochs
        if isinstance(n_avg, bool) or not isinstance(n_avg, (int, np.integer)) or not 0 <= n_avg <= self.epochs:
            raise ValueError(f"CNNClassifier.fit: average_epochs must be an integer in [0, epochs={self.epochs}]. "
                             f"Received {n_avg!r}")
        ks = self.kernel_size if isinstance(self.kernel_size, (tuple, list)) else (self.kernel_size,)
        if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
            raise ValueError(f"CNNClassifier.fit: kernel_size must be an integer >= 1 or a non-empty tuple of them. "
                             f"Received {self.kernel_size!r}")
        B = self._batch(X, "fit")
        self.classes_, yi = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"CNNClassifier.fit: y must hold at least 2 classes. Received {list(self.classes_)}")
        self.n_frames_, self.n_features_in_ = B.shape[1], B.shape[2]
        if aug and self.n_features_in_ % aug.feature_groups:
            aug = SpecAugment(**dict(aug.get_config(), feature_groups=1))  # groups that do not fit: one band
        Y = keras.utils.to_categorical(yi, len(self.classes_))
        self.models_ = []
        for e in range(int(n_est)):
            seed = None if self.random_state is None else int(self.random_state) + e
            if seed is not None:
                keras.utils.set_random_seed(seed)
            model = build_cnn(self.n_frames_, self.n_features_in_, len(self.classes_), filters=self.filters,
                              kernel_size=int(ks[e % len(ks)]), hidden=self.hidden, dropout=self.dropout,
                              learning_rate=self.learning_rate)
            hist = model.history
            if aug or n_avg:
                rng = np.random.default_rng(seed)
                avg, n_in = None, 0
                for ep in range(int(self.epochs)):
                    hist = model.fit(aug(B, rng) if aug else B, Y, batch_size=self.batch_size, epochs=ep + 1,
                                     initial_epoch=ep, verbose=self.verbose)
                    if n_avg and ep >= self.epochs - n_avg:
                        w = [np.asarray(a, dtype=np.float64) for a in model.get_weights()]
                        avg = w if avg is None else [a + b for a, b in zip(avg, w)]
                        n_in += 1
                if n_avg:
                    model.set_weights([(a / n_in).astype(np.float32) for a in avg])
            else:
                hist = model.fit(B, Y, batch_size=self.batch_size, epochs=self.epochs, verbose=self.verbose)
            self.models_.append(model)
            if e == 0:
                self.model_, self.history_ = model, hist
        return self

    def _check_fitted(self, op):
        if not hasattr(self, "model_"):
            raise ValueError(f"CNNClassifier.{op}: this classifier is not fitted yet; call fit first")

    def predict_proba(self, X):
        self._check_fitted("predict_proba")
        B = self._batch(X, "predict")
        models = getattr(self, "models_", None) or [self.model_]
        P = sum(np.asarray(m.predict(B, batch_size=256, verbose=0), dtype=np.float64) for m in models)
        return (P / len(models)).astype(np.float32)

    def predict(self, X):
        P = self.predict_proba(X)
        return self.classes_[np.argmax(P, axis=1)]

    def score(self, X, y):
        y = np.asarray(y)
        n = len(X) if hasattr(X, "__len__") else -1
        if y.ndim != 1 or len(y) != n:
            raise ValueError(f"CNNClassifier.score: y must hold one label per sequence ({n}). Received shape {y.shape}")
        return float(np.mean(self.predict(X) == y))
