"""Two processes on localhost over gloo: pyaiml.distributed against single-process training.

What it checks (issue 23, acceptance 1 and 2): sharded EM (GaussianHMM, GMMHMM,
CategoricalHMM, HMMClassifier, and a rank holding no sequence) equals single-process EM to
1e-10; Keras data-parallel training with a global batch of 64 over 2 ranks gives the weights
of single-process batch-64 training after 5 steps (float64 to 1e-10, float32 to 1e-5
relative), with loss and accuracy reduced across ranks, the checkpoint written by rank 0 and a
restart from it continuing with ``initial_epoch``; DDP over pyaiml.torch.nn modules matches DDP
over torch's; a killed rank (rank 1, and rank 0 which hosts the store), a hung rank and a rank
with bad input make the other exit non-zero with a message naming the failed rank.
How: each case starts ``tests/distributed_workers.py SCENARIO`` twice with RANK, WORLD_SIZE,
MASTER_ADDR=127.0.0.1 and a free MASTER_PORT (what torchrun sets), one thread each, every run
bounded by a subprocess timeout (60 s); the single-process reference runs in this process.
Skipped without torch (or without gloo).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import distributed_workers as W  # tests/ is on sys.path under pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "distributed_workers.py")
LIMIT_S = 60  # every launch of 2 ranks is bounded by this (acceptance 2: a survivor exits within 60 s)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(scenario, out, extra_env=None, world=2, wait_for=None):
    """Start ``world`` ranks of ``scenario``; returns [(returncode, output)] per rank. Ranks not
    in ``wait_for`` (default: all) are killed once those have exited."""
    port = _free_port()
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   LOCAL_RANK=str(r), OMP_NUM_THREADS="1", PYAIML_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), **(extra_env or {}))
        env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
        procs.append(subprocess.Popen([sys.executable, WORKER, scenario, str(out)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    wait_for = range(world) if wait_for is None else wait_for
    res = [None] * world
    try:
        for r in wait_for:
            try:
                o, _ = procs[r].communicate(timeout=LIMIT_S)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                outs = [p.communicate()[0] for p in procs]
                pytest.fail(f"{scenario}: rank {r} did not exit within {LIMIT_S} s; outputs:\n" + "\n".join(outs))
            res[r] = (procs[r].returncode, o)
    finally:
        for r, p in enumerate(procs):
            if res[r] is None:
                p.kill()
                res[r] = (p.wait(), p.communicate()[0])
    return res


def _ok(res):
    for r, (rc, out) in enumerate(res):
        assert rc == 0, f"rank {r} exited with {rc}:\n{out[-4000:]}"


def _load(out, name, r):
    return np.load(os.path.join(out, f"{name}.rank{r}.npz"))


# ----------------------------------------------------------------------------- acceptance 1
@pytest.fixture(scope="module")
def hmm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hmm")
    _ok(run_ranks("hmm", out))
    return out


@pytest.mark.parametrize("cls", ["GaussianHMM", "GMMHMM"])
def test_sharded_em_equals_single_process(hmm_run, cls):
    m = W.gaussian_model(cls).fit(W.make_gaussian_sequences())
    for r in (0, 1):
        z = _load(hmm_run, f"hmm_{cls}", r)
        for n in m._saved_attributes():
            np.testing.assert_allclose(z[n], np.asarray(m._raw(n)), rtol=0, atol=1e-10, err_msg=f"{cls} {n} rank {r}")
        np.testing.assert_allclose(z["history"], m.monitor_.history, rtol=1e-12, atol=0)
        assert len(z["history"]) == m.n_iter  # tol=0: every iteration ran, on both sides


def test_sharded_categorical_em_and_n_features_from_all_ranks(hmm_run):
    m = W.categorical_model().fit(W.make_symbols())
    for r in (0, 1):
        z = _load(hmm_run, "hmm_CategoricalHMM", r)
        for n in ("startprob_", "transmat_", "emissionprob_"):
            np.testing.assert_allclose(z[n], getattr(m, n), rtol=0, atol=1e-10)
        assert z["emissionprob_"].shape == (2, 5)


def test_sharded_hmm_classifier_equals_single_process(hmm_run):
    seqs, y = W.make_classifier_data()
    clf = W.classifier().fit(seqs, y)
    for r in (0, 1):
        z = _load(hmm_run, "hmm_classifier", r)
        np.testing.assert_array_equal(z["classes"], clf.classes_)
        for i, m in enumerate(clf.models_):
            for n in m._saved_attributes():
                np.testing.assert_allclose(z[f"{i}_{n}"], np.asarray(m._raw(n)), rtol=0, atol=1e-10)


def test_rank_without_sequences_contributes_nothing(hmm_run):
    m = W.gaussian_model().fit(W.make_gaussian_sequences()[:5])
    for r in (0, 1):
        z = _load(hmm_run, "hmm_empty_rank", r)
        np.testing.assert_allclose(z["means_"], m.means_, rtol=0, atol=1e-10)


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras")
    _ok(run_ranks("keras", out))
    return out


@pytest.mark.parametrize("dtype,rtol,atol", [(np.float64, 1e-10, 1e-12), (np.float32, 1e-5, 1e-7)])
def test_keras_data_parallel_equals_single_process_batch_64(keras_run, dtype, rtol, atol):
    x, y = W.make_images()
    assert len(x) == 64 * 5  # one epoch = 5 steps of the global batch
    m = W.keras_model(dtype)
    h = W.keras_fit(m, x, y, dtype, epochs=1)
    for r in (0, 1):
        z = _load(keras_run, f"keras_{np.dtype(dtype).name}", r)
        for i, w in enumerate(m.get_weights()):
            np.testing.assert_allclose(z[f"arr_{i}"], w, rtol=rtol, atol=atol, err_msg=f"weight {i} rank {r}")
        # History holds the loss and accuracy over all 320 samples, not over a rank's half
        np.testing.assert_allclose(z["loss"], h.history["loss"], rtol=1e-5)
        np.testing.assert_array_equal(z["acc"], h.history["accuracy"])


def test_keras_tape_sequential_data_parallel(keras_run):
    x, y = W.make_images()
    m = W.keras_tape_model()
    h = W.keras_fit(m, x, y, np.float32, epochs=1)
    for r in (0, 1):
        z = _load(keras_run, "keras_tape", r)
        for i, w in enumerate(m.get_weights()):
            np.testing.assert_allclose(z[f"arr_{i}"], w, rtol=1e-5, atol=1e-6, err_msg=f"weight {i} rank {r}")
        np.testing.assert_allclose(z["loss"], h.history["loss"], rtol=1e-5)


def test_keras_last_batch_smaller_than_the_world(keras_run):
    x, y = W.make_images(n=129)  # batches of 64, 64 and 1
    m = W.keras_model(np.float64)
    h = W.keras_fit(m, x, y, np.float64, epochs=2)
    for r in (0, 1):
        z = _load(keras_run, "keras_partial", r)
        for i, w in enumerate(m.get_weights()):
            np.testing.assert_allclose(z[f"arr_{i}"], w, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(z["loss"], h.history["loss"], rtol=1e-10)
        np.testing.assert_allclose(z["acc"], h.history["accuracy"], rtol=1e-12)


def test_keras_checkpoint_and_resume_with_initial_epoch(keras_run):
    assert os.path.exists(os.path.join(keras_run, "ckpt_float32.keras"))
    assert not [f for f in os.listdir(keras_run) if f.endswith(".tmp")]  # atomic: no temporary left
    x, y = W.make_images()
    m = W.keras_model(np.float32)
    W.keras_fit(m, x, y, np.float32, epochs=2)
    for r in (0, 1):
        z = _load(keras_run, "keras_resume", r)
        np.testing.assert_array_equal(z["epochs"], [0, 1])
        for i, w in enumerate(m.get_weights()):
            np.testing.assert_allclose(z[f"arr_{i}"], w, rtol=1e-5, atol=1e-7)


def test_ddp_over_pyaiml_modules_matches_ddp_over_torch_modules(tmp_path):
    _ok(run_ranks("ddp", tmp_path))
    z0, z1 = _load(tmp_path, "ddp", 0), _load(tmp_path, "ddp", 1)
    keys = [k[len("torch."):] for k in z0.files if k.startswith("torch.")]
    assert len(keys) == 4
    for k in keys:
        np.testing.assert_allclose(z0["pyaiml." + k], z0["torch." + k], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(z0["pyaiml." + k], z1["pyaiml." + k])  # DDP kept the ranks identical


# ----------------------------------------------------------------------------- acceptance 2
@pytest.mark.parametrize("victim", [1, 0])
def test_killed_rank_is_named_by_the_survivor(tmp_path, victim):
    res = run_ranks("die", tmp_path, {"TEST_DIST_VICTIM": str(victim), "TEST_DIST_TIMEOUT": "20"})
    rc_v, _ = res[victim]
    rc, out = res[1 - victim]
    assert rc_v == -9
    assert rc != 0
    assert "DistributedError" in out
    if victim == 1:
        assert "rank 1 stopped" in out, out[-3000:]
    else:
        assert "rank 0 failed" in out, out[-3000:]


def test_hung_rank_is_named_after_the_timeout(tmp_path):
    res = run_ranks("hang", tmp_path, {"TEST_DIST_TIMEOUT": "6"}, wait_for=[0])
    rc, out = res[0]
    assert rc != 0
    assert "rank 1 is alive but never entered it" in out, out[-3000:]
    assert "(barrier)" in out


def test_frozen_rank_is_named_after_the_timeout(tmp_path):
    res = run_ranks("hang", tmp_path, {"TEST_DIST_TIMEOUT": "6", "TEST_DIST_HANG": "stop"}, wait_for=[0])
    rc, out = res[0]
    assert rc != 0
    assert "rank 1 stopped (no heartbeat" in out, out[-3000:]


def test_uncaught_exception_on_a_rank_is_named_with_its_message(tmp_path):
    res = run_ranks("raise", tmp_path)
    assert res[1][0] != 0
    rc, out = res[0]
    assert rc != 0
    assert "rank 1 failed: RuntimeError: the data loader of rank 1 broke" in out, out[-3000:]


def test_bad_input_on_one_rank_stops_every_rank(tmp_path):
    res = run_ranks("bad_input", tmp_path)
    assert res[1][0] != 0 and "X must be finite" in res[1][1]
    assert res[0][0] != 0
    assert "failed on rank 1 (ValueError: GaussianHMM.fit: X must be finite" in res[0][1], res[0][1][-3000:]


def test_failed_e_step_on_one_rank_stops_every_rank(tmp_path):
    res = run_ranks("estep_error", tmp_path)
    assert res[1][0] != 0 and "zero likelihood" in res[1][1], res[1][1][-3000:]
    assert res[0][0] != 0
    assert "CategoricalHMM.fit E-step failed on rank 1 (ValueError: CategoricalHMM.fit: sequence 0" in res[0][1], \
        res[0][1][-3000:]


# ----------------------------------------------------------------------------- acceptance 4
def test_example_runs_under_torchrun_and_resumes(tmp_path):
    ckpt = tmp_path / "cnn.keras"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           os.path.join(ROOT, "examples", "distributed_cnn.py"), "--ckpt", str(ckpt)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run(cmd + ["--epochs", "1"], env=env, capture_output=True, text=True, timeout=2 * LIMIT_S,
                       check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 rank(s), backend gloo" in r.stdout and "Epoch 1/1" in r.stdout and "test accuracy" in r.stdout
    assert r.stdout.count("test accuracy") == 1  # only rank 0 prints
    assert ckpt.exists()
    r = subprocess.run(cmd + ["--epochs", "2"], env=env, capture_output=True, text=True, timeout=2 * LIMIT_S,
                       check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "starting at epoch 2 of 2" in r.stdout and "Epoch 2/2" in r.stdout and "Epoch 1/2" not in r.stdout
