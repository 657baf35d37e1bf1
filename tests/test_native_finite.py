"""The NaN/inf input checks switched off for a block (pyaiml.ops.finite_checks, used by the
Keras models and Seq2Seq training loops as _NoFiniteChecks) affect only the thread (or
asyncio task) that entered the block; set_check_finite stays the process-wide setting."""
import asyncio
import threading

import numpy as np
import pytest

import pyaiml.ops as ops
from pyaiml.keras.models import _NoFiniteChecks as keras_no_checks
from pyaiml.ops import _validate
from pyaiml.seq.seq2seq import _NoFiniteChecks as seq_no_checks

X = np.ones((1, 1, 4, 4), np.float32)
X[0, 0, 1, 2] = np.nan
W = np.ones((1, 1, 1, 1), np.float32)


def _raises_on_nan():
    try:
        ops.conv2d(X, W)
    except ValueError as e:
        assert "conv2d: x must be finite" in str(e) and "index (0, 0, 1, 2)" in str(e)
        return True
    return False


@pytest.mark.parametrize("block", [lambda: ops.finite_checks(False), keras_no_checks, seq_no_checks])
def test_two_threads_do_not_see_each_others_setting(block):
    inside, checked = threading.Event(), threading.Event()
    seen = {}

    def off():
        with block():
            seen["off_flag"] = ops.get_check_finite()
            seen["off_raises"] = _raises_on_nan()
            inside.set()
            checked.wait(10)  # the other thread checks while this one is still inside
        seen["off_after"] = ops.get_check_finite()

    def on():
        inside.wait(10)
        seen["on_flag"] = ops.get_check_finite()
        seen["on_raises"] = _raises_on_nan()
        checked.set()

    ts = [threading.Thread(target=off), threading.Thread(target=on)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert seen == {"off_flag": False, "off_raises": False, "on_flag": True, "on_raises": True, "off_after": True}
    assert ops.get_check_finite() and _raises_on_nan()


def test_asyncio_tasks_are_isolated():
    async def main():
        gate = asyncio.Event()

        async def off():
            with ops.finite_checks(False):
                await gate.wait()
                return ops.get_check_finite(), _raises_on_nan()

        async def on():
            r = ops.get_check_finite(), _raises_on_nan()
            gate.set()
            return r

        return await asyncio.gather(asyncio.create_task(off()), asyncio.create_task(on()))

    assert asyncio.run(main()) == [(False, False), (True, True)]


def test_blocks_nest_and_restore_on_error():
    blk = ops.finite_checks(False)
    with pytest.raises(RuntimeError):
        with blk:
            assert not ops.get_check_finite()
            with ops.finite_checks(True):
                assert ops.get_check_finite() and _raises_on_nan()
                with blk:  # the same object re-entered
                    assert not ops.get_check_finite() and not _raises_on_nan()
                assert ops.get_check_finite()
            assert not ops.get_check_finite()
            raise RuntimeError("inside")
    assert ops.get_check_finite() and _raises_on_nan()


def test_set_check_finite_is_process_wide():
    seen = []
    try:
        ops.set_check_finite(False)
        t = threading.Thread(target=lambda: seen.append((ops.get_check_finite(), _raises_on_nan())))
        t.start()
        t.join(10)
        assert seen == [(False, False)] and not _raises_on_nan()
        with ops.finite_checks(True):  # a block wins over the process-wide setting, here only
            assert _raises_on_nan()
    finally:
        ops.set_check_finite(True)
    assert _raises_on_nan()


def test_nan_index_in_the_callers_shape():
    # conv1d and max_pool1d scan a 4-D view; the index names the element of the 3-D input.
    x = np.zeros((2, 3, 7), np.float32)
    x[1, 2, 5] = np.inf
    with pytest.raises(ValueError, match=r"conv1d: x must be finite .* Received inf at index \(1, 2, 5\)"):
        ops.conv1d(x, np.ones((1, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"conv1d: x must be finite .* at index \(1, 5, 2\)"):
        ops.conv1d(np.ascontiguousarray(x.transpose(0, 2, 1)), np.ones((1, 3, 2), np.float32), data_format="NLC")
    with pytest.raises(ValueError, match=r"max_pool1d: x must be finite .* at index \(1, 2, 5\)"):
        ops.max_pool1d(x, 2)
    g = np.zeros((2, 1, 6), np.float32)
    g[0, 0, 4] = np.nan
    with pytest.raises(ValueError, match=r"conv1d_backward: grad_out must be finite .* at index \(0, 0, 4\)"):
        ops.conv1d_backward(g, np.zeros((2, 3, 7), np.float32), np.ones((1, 3, 2), np.float32))
    assert _validate.get_check_finite()
