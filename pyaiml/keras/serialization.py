"""Registration and (de)serialisation of layers and models for save/load, without pickle.

What it is. ``register_keras_serializable(package="Custom", name=None)`` (a class decorator,
as in Keras) records a custom Layer or Model class under ``"package>name"``; a saved model
names each layer's class that way (built-in classes by their plain name) with its
``get_config()``, and loading rebuilds it with ``from_config`` (default ``cls(**config)``).
A class that was not registered at load time is a ValueError naming the layer, the class
and the decorator to use. Model files: ``model_config``/``model_from_config`` describe any
model (Sequential's own config, a functional graph, or a subclassed model's config plus the
input shapes it was built with, so loading can build it before setting the weights).

Not here: the file format itself (pyaiml/keras/saving.py). Tests:
tests/test_keras_functional.py, tests/test_keras_subclass.py (save/load round trips, the
unregistered-class error).
"""
from __future__ import annotations

import numpy as np

from pyaiml.keras import layers as _layers
from pyaiml.keras._common import placeholder_run

_REGISTRY: dict[str, type] = {}


class UnregisteredClassError(ValueError):
    """A saved model names a class this program has not registered."""


def register_keras_serializable(package="Custom", name=None):
    """Class (or function) decorator: make a custom Layer/Model, or a function a Lambda layer
    calls, loadable by ``load_model``."""
    def deco(cls):
        key = f"{package}>{name or cls.__name__}"
        _REGISTRY[key] = cls
        cls._registered_name = key
        return cls
    return deco


def get_registered_name(cls):
    return cls.__dict__.get("_registered_name") or cls.__name__


def get_registered_object(name, custom_objects=None):
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if name in _REGISTRY:
        return _REGISTRY[name]
    from pyaiml.keras import merging  # noqa: F401 - registers the merge layers

    if name in _layers._LAYERS:
        return _layers._LAYERS[name]
    from pyaiml.keras.functional import Functional, OpLayer

    return {"Functional": Functional, "OpLayer": OpLayer}.get(name)


def serialize_layer(layer):
    cls = type(layer)
    if (cls.__module__ not in _layers.BUILTIN_MODULES and "_registered_name" not in cls.__dict__
            and cls.__name__ not in _layers._LAYERS):
        registered = None
    else:
        registered = get_registered_name(cls)
    return {"class_name": registered or cls.__name__, "module": cls.__module__, "registered": registered is not None,
            "config": layer.get_config()}


def _unknown(what, name, cfg):
    layer_name = (cfg.get("config") or {}).get("name")
    return UnregisteredClassError(
        f"load_model: {what} {layer_name!r} is of class {name!r} (module {cfg.get('module', '?')}), which is not "
        "registered. Decorate the class with @keras.saving.register_keras_serializable() (or pass "
        "custom_objects={name: class}) in the program that loads the model")


def deserialize_layer(cfg, custom_objects=None):
    name = cfg.get("class_name")
    cls = get_registered_object(name, custom_objects)
    if cls is None:
        raise _unknown("layer", name, cfg)
    conf = dict(cfg["config"])
    if hasattr(cls, "from_config"):
        try:
            return cls.from_config(conf, custom_objects) if _takes_custom(cls) else cls.from_config(conf)
        except TypeError as e:
            raise TypeError(f"load_model: {name}.from_config could not rebuild layer {conf.get('name')!r}: {e}. A "
                            "custom class whose __init__ takes arguments must return them from get_config()") from None
    return cls(**conf)


def _takes_custom(cls):
    import inspect

    try:
        return "custom_objects" in inspect.signature(cls.from_config).parameters
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- whole models
def model_config(model):
    """{"class_name", "config", ...} describing ``model`` for config.json."""
    from pyaiml.keras.functional import Functional

    if getattr(model, "_is_sequential", False):
        return {"class_name": "Sequential", "config": model.get_config()}
    if type(model) is Functional:
        return {"class_name": "Functional", "config": model.get_config()}
    d = serialize_layer(model)
    if not d["registered"]:
        raise ValueError(f"save: {type(model).__name__} is a subclassed model whose class is not registered; decorate "
                         "it with @keras.saving.register_keras_serializable() so load_model can rebuild it")
    d["build_input_shape"] = _jsonable_shape(model._build_input_shape)
    if model._build_input_shape is None:
        raise ValueError(f"save: subclassed model {model.name!r} is not built; call it on data (or fit it) first")
    d["build_input_dtype"] = getattr(model, "_build_input_dtype", "float32")
    return d


def _jsonable_shape(s):
    if s is None:
        return None
    if isinstance(s, dict):
        return {"dict": {k: _jsonable_shape(v) for k, v in s.items()}}
    if isinstance(s, list):
        return {"list": [_jsonable_shape(v) for v in s]}
    return list(s)


def _zeros(s, dtype):
    if isinstance(s, dict) and "dict" in s:
        return {k: _zeros(v, dtype) for k, v in s["dict"].items()}
    if isinstance(s, dict) and "list" in s:
        return [_zeros(v, dtype) for v in s["list"]]
    return np.zeros(tuple(1 if d is None else int(d) for d in s), dtype=dtype)


def model_from_config(d, custom_objects=None):
    from pyaiml.keras.functional import Functional
    from pyaiml.keras.models import Sequential

    name = d.get("class_name")
    if not isinstance(name, str) or not isinstance(d.get("config"), dict):
        raise TypeError(f"the model entry needs a class_name and a config object. Received class_name={name!r}")
    if name == "Sequential":
        return Sequential.from_config(d["config"])
    if name == "Functional":
        return Functional.from_config(d["config"], custom_objects)
    cls = get_registered_object(name, custom_objects)
    if cls is None:
        raise _unknown("model", name, d)
    model = deserialize_layer(d, custom_objects)
    shape = d.get("build_input_shape")
    if shape is not None:
        from pyaiml.ops import _validate

        # a build on zeros: a placeholder run (stateful layers keep no states)
        with _validate.finite_checks(False), placeholder_run():
            model(_zeros(shape, d.get("build_input_dtype") or "float32"), training=False)
    return model
