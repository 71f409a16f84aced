"""Read and write Keras 2 HDF5 weight files (the layout of keras-vggface's released ``.h5`` files) with h5py.

Layout: root attribute ``layer_names`` (one entry per layer, weightless layers included), one group per
layer (``/`` in a name nests groups) whose attribute ``weight_names`` lists datasets such as
``conv1/7x7_s2/kernel:0``, stored under that relative path. Full-model saves put all of it in a
``model_weights`` group. Layers are matched one to one by name (``/`` <-> ``__``); weightless layers,
whose automatic names vary between Keras sessions, are not compared.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np

from pipeline.backbones.errors import WeightFileError
from pipeline.backbones.vggface import keras_name, original_name
from pipeline.execution.logs import get_logger
from pipeline.storage.atomic import atomic_path

log = get_logger(__name__)

MODEL_WEIGHTS = "model_weights"


def _decode(value: object) -> str:
    """An HDF5 string attribute entry as ``str``."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _string_list(group: h5py.Group, name: str) -> list[str] | None:
    """A list-of-strings attribute, also when Keras 2 split it into chunks ``name0``, ``name1``, ...; None if absent."""
    if name in group.attrs:
        return [_decode(v) for v in np.atleast_1d(group.attrs[name])]
    chunks, index = [], 0
    while f"{name}{index}" in group.attrs:
        chunks.extend(_decode(v) for v in np.atleast_1d(group.attrs[f"{name}{index}"]))
        index += 1
    return chunks if index else None


def _weights_root(handle: h5py.File, path: Path) -> h5py.Group:
    """The group holding ``layer_names``: the file root, or ``model_weights`` in a full-model save."""
    if "layer_names" in handle.attrs or "layer_names0" in handle.attrs:
        return handle
    if MODEL_WEIGHTS in handle and _string_list(handle[MODEL_WEIGHTS], "layer_names") is not None:
        return handle[MODEL_WEIGHTS]
    raise WeightFileError(
        path, "not a Keras 2 weight file (no 'layer_names' attribute at the root or in 'model_weights')"
    )


def read_layout(path: Path | str) -> list[tuple[str, list[tuple[str, tuple[int, ...]]]]]:
    """The file's layers in stored order, each with its ``(weight name, shape)`` list (empty for weightless layers)."""
    path = Path(path)
    with h5py.File(path, "r") as handle:
        root = _weights_root(handle, path)
        return [
            (name, [(w, tuple(ds.shape)) for w, ds in _datasets(root, name, path)])
            for name in _string_list(root, "layer_names") or []
        ]


def _datasets(root: h5py.Group, layer: str, path: Path) -> list[tuple[str, h5py.Dataset]]:
    """One layer's ``(weight name, dataset)`` pairs in ``weight_names`` order."""
    if layer not in root:
        raise WeightFileError(path, f"layer {layer!r} is listed in layer_names but has no group")
    group = root[layer]
    out = []
    for weight in _string_list(group, "weight_names") or []:
        if weight not in group or not isinstance(group[weight], h5py.Dataset):
            raise WeightFileError(path, f"layer {layer!r}: weight {weight!r} is listed in weight_names but not stored")
        out.append((weight, group[weight]))
    return out


def _short(weight_name: str) -> str:
    """``conv1/7x7_s2/bn/gamma:0`` -> ``gamma``."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _match(path: Path, model: keras.Model, file_layers: dict[str, list[tuple[str, h5py.Dataset]]]) -> None:
    """Raise :class:`WeightFileError` at the first layer, weight count, weight name or shape that differs."""
    model_layers = {original_name(layer.name): layer for layer in model.layers if layer.weights}
    for name, stored in file_layers.items():
        layer = model_layers.get(name)
        if layer is None:
            raise WeightFileError(path, f"layer {name!r} in the file has no counterpart in model {model.name!r}")
        if len(stored) != len(layer.weights):
            raise WeightFileError(
                path, f"layer {name!r}: the file has {len(stored)} weights, the model {len(layer.weights)}"
            )
        for (weight, dataset), variable in zip(stored, layer.weights):
            if _short(weight) != variable.name:
                raise WeightFileError(
                    path, f"layer {name!r}: file weight {weight!r} where the model has {variable.name!r}"
                )
            if tuple(dataset.shape) != tuple(variable.shape):
                raise WeightFileError(
                    path,
                    f"layer {name!r}: weight {weight!r} has shape {tuple(dataset.shape)} in the "
                    f"file, {tuple(variable.shape)} in the model",
                )
    missing = [name for name in model_layers if name not in file_layers]
    if missing:
        raise WeightFileError(
            path,
            f"layer {missing[0]!r} of model {model.name!r} is absent from the file "
            f"({len(missing)} layers with weights missing)",
        )


def load_keras2_weights(model: keras.Model, path: Path | str) -> None:
    """Load a Keras 2 HDF5 weight file into ``model``.

    Any file that does not match is refused before anything is changed.
    """
    path = Path(path)
    with h5py.File(path, "r") as handle:
        root = _weights_root(handle, path)
        file_layers = {
            name: stored for name in _string_list(root, "layer_names") or [] if (stored := _datasets(root, name, path))
        }
        _match(path, model, file_layers)
        for name, stored in file_layers.items():
            model.get_layer(keras_name(name)).set_weights([dataset[()] for _, dataset in stored])
    log.debug("loaded %d layers of weights from %s into %s", len(file_layers), path, model.name)


def _string_array(values: list[str]) -> np.ndarray:
    """Strings as the fixed-length bytes array Keras 2 stored (an empty float array when there are none)."""
    return np.array([v.encode("utf-8") for v in values]) if values else np.array([])


def write_keras2_weight_file(
    model: keras.Model, path: Path | str, full_model: bool = False, keras_version: str = "2.1.5"
) -> Path:
    """Write ``model``'s weights in the Keras 2 layout of the released files.

    They go under ``model_weights`` if ``full_model``.
    """
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        root = handle.create_group(MODEL_WEIGHTS) if full_model else handle
        names = [original_name(layer.name) for layer in model.layers]
        root.attrs["layer_names"] = _string_array(names)
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = keras_version.encode("utf-8")
        for name, layer in zip(names, model.layers):
            group = root.require_group(name)
            weight_names = [f"{name}/{variable.name}:0" for variable in layer.weights]
            group.attrs["weight_names"] = _string_array(weight_names)
            for weight, variable in zip(weight_names, layer.weights):
                group.create_dataset(weight, data=keras.ops.convert_to_numpy(variable))
    return path
