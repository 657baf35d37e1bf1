"""Which attributes of a subclassed layer or model count as nested layers (Layer._sublayers):
layers alone, and in lists, tuples and dicts up to two levels deep, also when those mix layers
with plain values; nothing in sets, arrays or plain values. The walk skips attributes that
cannot hold a layer (numbers, strings, arrays, Variables, lists and dicts of those) without
visiting them, so these cases pin what it must still find. No torch needed."""
import numpy as np

from pyaiml import keras
from pyaiml.keras import layers


class Holder(keras.Model):
    def __init__(self):
        super().__init__()
        self.alone = layers.Dense(2, name="alone")
        self.mixed_list = [3, "x", layers.Dense(2, name="in_list")]
        self.pair = ("name", layers.Dense(2, name="in_tuple"))
        self.table = {"a": 1.0, "b": layers.Dense(2, name="in_dict")}
        self.nested = [[layers.Dense(2, name="two_deep")], (np.zeros(2),)]
        self.too_deep = [[[layers.Dense(2, name="three_deep")]]]
        self.in_set = {1, 2}
        self.shape_like = (4, 5)
        self.arr = np.ones(3, np.float32)
        self.w = self.add_weight(shape=(2,), initializer="zeros")

    def call(self, x):
        return self.alone(x)


def test_sublayers_found_in_mixed_containers():
    m = Holder()
    names = [l.name for l in m._sublayers()]
    assert names == ["alone", "in_list", "in_tuple", "in_dict", "two_deep"], names


def test_variables_of_found_layers_listed_once_built():
    m = Holder()
    x = np.ones((3, 4), np.float32)
    for layer in (m.mixed_list[2], m.pair[1], m.table["b"], m.nested[0][0]):
        layer(x)
    m(x)
    # own weight, then the five found layers' kernel and bias each; three_deep is not tracked
    assert len(m.trainable_variables) == 1 + 5 * 2
    m.pair[1].trainable = False
    assert len(m.trainable_variables) == 1 + 4 * 2


def test_python_numbers_are_weak_in_ops_and_on_the_tape():
    """float32 with a Python number stays float32 (Keras's rule, and NumPy 2's for numbers):
    ops.multiply(x, 2.0) was float64, and a float32 Dense after it raised a dtype mismatch."""
    from pyaiml.autograd import GradientTape
    from pyaiml.keras import ops

    x = np.ones((2, 3), np.float32)
    for f in (ops.add, ops.subtract, ops.multiply, ops.divide, ops.power, ops.maximum, ops.minimum):
        assert f(x, 2.0).dtype == np.float32 and f(2, x).dtype == np.float32, f.__name__
    assert ops.where(x > 0, x, 0.0).dtype == np.float32
    assert ops.multiply(x.astype(np.float64), 2.0).dtype == np.float64
    assert ops.multiply(x, np.float64(2.0)).dtype == np.float64  # a NumPy float64 is not weak
    with GradientTape() as tape:
        xx = tape.watch(x)
        y = ops.multiply(xx, 3.0)
        loss = ops.sum(ops.multiply(y, y))
    g = tape.gradient(loss, xx)
    assert y.value.dtype == np.float32 and g.dtype == np.float32
    np.testing.assert_allclose(g, 18.0 * x)

    class Twice(layers.Layer):
        def call(self, t):
            return ops.multiply(t, 2.0)

    i = keras.Input((3,))
    m = keras.Model(i, layers.Dense(2)(Twice()(i)))
    assert m(x).dtype == np.float32 and m.predict(x, verbose=0).dtype == np.float32
