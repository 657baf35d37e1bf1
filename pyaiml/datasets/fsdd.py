"""Loader for the Free Spoken Digit Dataset (FSDD) folder layout.

What it is: a reader of ``{digit}_{speaker}_{index}.wav`` files (in ``path`` or in
``path/recordings``) with pyaiml.audio.read_wav, returning the signals, their labels and
the dataset's official split (indexes 0-4 test, the rest train).
What it is not: a downloader; pyaiml ships no FSDD data and never requires it. FSDD is by
Zohar Jackson et al., CC BY-SA 4.0: attribute it wherever it is used.
Test: tests/test_fsdd.py (its FSDD part reads the folder named by PYAIML_FSDD and skips
without one; tests/conftest.py sets the variable when a shared copy is found).
"""
from __future__ import annotations

import dataclasses
import os
import re
import warnings

import numpy as np

from pyaiml.audio.wav import read_wav

_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$", re.IGNORECASE)
TEST_INDEXES = range(0, 5)  # the official split: recordings 0-4 of every speaker and digit are test


@dataclasses.dataclass
class FSDD:
    """Recordings of spoken digits, in file-name order (speaker, digit, index).

    Attributes
    ----------
    signals : list of float32 arrays, shape (n_i,)
    rates : int array, shape (N,)
    digits : int array, shape (N,)
    speakers : str array, shape (N,)
    indexes : int array, shape (N,) (the recording number in the file name)
    filenames : list of str (base names)
    train_idx, test_idx : int arrays, positions of the official split
    skipped : list of (filename, reason) for files left out with on_error="warn"
    path : folder read
    """

    signals: list
    rates: np.ndarray
    digits: np.ndarray
    speakers: np.ndarray
    indexes: np.ndarray
    filenames: list
    train_idx: np.ndarray
    test_idx: np.ndarray
    skipped: list
    path: str

    def __len__(self) -> int:
        return len(self.signals)

    def split(self, test_speaker: str | None = None):
        """(train_idx, test_idx): the official split, or, with ``test_speaker``, every recording
        of that speaker as test and all others' as train (leave-one-speaker-out)."""
        if test_speaker is None:
            return self.train_idx, self.test_idx
        if test_speaker not in set(self.speakers.tolist()):
            raise ValueError(f"FSDD.split: test_speaker must be one of {sorted(set(self.speakers.tolist()))}. "
                             f"Received {test_speaker!r}")
        m = self.speakers == test_speaker
        return np.flatnonzero(~m), np.flatnonzero(m)

    def subset(self, idx) -> "FSDD":
        """The recordings at positions ``idx``, as a new FSDD (split recomputed)."""
        idx = np.asarray(idx, dtype=np.int64)
        tst = np.isin(self.indexes[idx], list(TEST_INDEXES))
        return FSDD([self.signals[i] for i in idx], self.rates[idx], self.digits[idx], self.speakers[idx],
                    self.indexes[idx], [self.filenames[i] for i in idx], np.flatnonzero(~tst),
                    np.flatnonzero(tst), list(self.skipped), self.path)


def load_fsdd(path, on_error: str = "raise", speakers=None) -> FSDD:
    """Read an FSDD folder.

    Parameters
    ----------
    path : folder holding the ``{digit}_{speaker}_{index}.wav`` files, or its parent with a
        ``recordings`` sub-folder (the dataset's own layout).
    on_error : {"raise", "warn"}
        What a file that cannot be read (truncated, not a WAV, unsupported encoding, empty)
        or a ``.wav`` whose name does not follow the pattern does: "raise" stops with an
        error naming it; "warn" skips it and, after loading, issues one warning listing
        every skipped file and why (also kept in ``.skipped``).
    speakers : optional iterable of speaker names to keep.

    Returns
    -------
    FSDD
    """
    if on_error not in ("raise", "warn"):
        raise ValueError(f"load_fsdd: on_error must be 'raise' or 'warn'. Received {on_error!r}")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"load_fsdd: path must be an FSDD folder. Received {path!r}, which "
                                f"{'is not a folder' if os.path.exists(path) else 'does not exist'}")
    folder = os.path.join(path, "recordings") if os.path.isdir(os.path.join(path, "recordings")) else path
    keep = None if speakers is None else set(speakers)
    items, skipped = [], []
    for fname in os.listdir(folder):
        if not fname.lower().endswith(".wav"):
            continue
        m = _NAME.match(fname)
        if m is None:
            reason = "name does not follow {digit}_{speaker}_{index}.wav"
            if on_error == "raise":
                raise ValueError(f"load_fsdd: {os.path.join(folder, fname)}: {reason}")
            skipped.append((fname, reason))
            continue
        d, spk, i = int(m.group(1)), m.group(2), int(m.group(3))
        if keep is not None and spk not in keep:
            continue
        items.append((spk, d, i, fname))
    items.sort()
    signals, rates, meta = [], [], []
    for spk, d, i, fname in items:
        full = os.path.join(folder, fname)
        try:
            y, sr = read_wav(full)
            if y.ndim == 2:
                y = y.mean(axis=1, dtype=np.float32)
            if y.size == 0:
                raise ValueError(f"{full}: no samples")
        except (ValueError, OSError) as e:
            if on_error == "raise":
                raise ValueError(f"load_fsdd: cannot read {full}: {e}") from e
            skipped.append((fname, str(e)))
            continue
        signals.append(y)
        rates.append(sr)
        meta.append((spk, d, i, fname))
    if skipped and on_error == "warn":
        lines = "\n".join(f"  {f}: {r}" for f, r in skipped)
        warnings.warn(f"load_fsdd: skipped {len(skipped)} file(s) in {folder}:\n{lines}", RuntimeWarning,
                      stacklevel=2)
    if not signals:
        raise ValueError(f"load_fsdd: no readable {{digit}}_{{speaker}}_{{index}}.wav recordings in {folder}"
                         + (f" for speakers {sorted(keep)}" if keep is not None else ""))
    idx = np.array([m[2] for m in meta], dtype=np.int64)
    tst = np.isin(idx, list(TEST_INDEXES))
    return FSDD(signals=signals, rates=np.array(rates, dtype=np.int64),
                digits=np.array([m[1] for m in meta], dtype=np.int64),
                speakers=np.array([m[0] for m in meta]), indexes=idx, filenames=[m[3] for m in meta],
                train_idx=np.flatnonzero(~tst), test_idx=np.flatnonzero(tst), skipped=skipped, path=folder)


# Where FSDD is looked for, in order: an explicit path, $PYAIML_FSDD, ./data/fsdd.
FSDD_DEFAULTS = (os.path.join("data", "fsdd"),)


def holds_fsdd(path):
    """True when ``path`` or its ``recordings/`` sub-folder holds .wav files."""
    for d in (path, os.path.join(path, "recordings")):
        try:
            if any(n.lower().endswith(".wav") for n in os.listdir(d)):
                return True
        except OSError:
            pass
    return False


def find_fsdd(explicit=None, environ=None, cwd=None):
    """Where pyaiml looks for FSDD (demo, benchmarks, examples): ``(path or None, source, tried)``.

    ``source`` is "--fsdd", "PYAIML_FSDD" or "default"; with an explicit path or the
    environment variable that path is returned whether or not it holds FSDD (the caller
    reports it); otherwise the first default folder that holds .wav files, or None.
    """
    environ = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    if explicit:
        return os.path.abspath(os.path.join(cwd, os.path.expanduser(explicit))), "--fsdd", [explicit]
    if environ.get("PYAIML_FSDD"):
        p = environ["PYAIML_FSDD"]
        return os.path.abspath(os.path.join(cwd, os.path.expanduser(p))), "PYAIML_FSDD", [p]
    tried = []
    for rel in FSDD_DEFAULTS:
        p = os.path.normpath(os.path.join(cwd, rel))
        tried.append(p)
        if holds_fsdd(p):
            return p, "default", tried
    return None, "default", tried
