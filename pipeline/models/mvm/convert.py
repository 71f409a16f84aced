"""Kim, Yeo and Ro's released PyTorch checkpoint of the memory model, tensor by tensor onto our Keras ``mvm`` layers.

The checkpoint is a ``torch.save`` of four state_dicts (``v_front_state_dict``, ``a_front_state_dict``,
``mem_state_dict``, ``tcn_state_dict``). Our layers are named after the authors' module paths: group prefix, then
the path with ``.`` as ``_`` (``resnet.layer1.0.res_layer.1`` of the visual front is ``v_front_resnet_layer1_0_
res_layer_1``); the memory layers keep the authors' attribute names (``key``, ``value``, ``q_embd``, ...). A key is
resolved to the longest module path naming one of our layers, the rest of the path followed as attributes, and its
last part to the variable of that layer kind: convolution weights [out, in, *k] become kernels [*k, in, out], linear
weights are transposed (our model permutes its features to the authors' C, H, W order before each flatten), batch norm's
weight/bias/running_mean/running_var become gamma/beta/moving_mean/moving_variance (``num_batches_tracked`` is
dropped), PReLU weights and the memories' key and value take their variable's shape. Every checkpoint tensor must
land on exactly one of our weights and every weight must get one: anything missing, left over or misshaped is
refused, named. Reading the file needs torch (the ``torch`` extra) and never unpickles anything but tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from pipeline.errors import ConfigError, DataError

GROUPS = {
    "v_front_state_dict": "v_front",
    "a_front_state_dict": "a_front",
    "mem_state_dict": "mem",
    "tcn_state_dict": "tcn",
}
DROPPED = "num_batches_tracked"  # batch norm's step counter: no weight of ours
HEAD = ("tcn_state_dict", "tcn.tcn_output")  # the classifier: rows in the authors' class order
FRONT_MEMORY = "mem_state_dict"
TORCH_EPSILON = 1e-5  # PyTorch's batch and layer norm default, which the authors keep
# what the authors' loader feeds the visual front (src/data/vid_aud_lrw.py, test mode)
PREPROCESSING = {
    "frames": "RGB decoded, the fixed box x 59..195, y 95..231 of the 256x256 frame (136 px)",
    "resize": "112x112 (torchvision Resize on the PIL image: bilinear, antialiased)",
    "colour": "gray (PIL convert('L'): 0.299 R + 0.587 G + 0.114 B, rounded to uint8)",
    "normalise": "(x / 255 - 0.4136) / 0.1700",
    "frames_per_clip": 29,
    "test_time_augmentation": "the authors' test.py --test_aug adds the logits of the mirrored clip (evaluate --tta)",
}
# what `evaluate` feeds it from `prepare --dataset lrw --gray`
OUR_PREPROCESSING = {
    "frames": "decoded by PyAV; prepare stores the box with a 5 px margin (x 54..200, y 90..236), evaluate takes its "
    "centred 136 px (x 59..195, y 95..231)",
    "colour": "gray at prepare (OpenCV RGB2GRAY: 0.299 R + 0.587 G + 0.114 B, rounded to uint8), before the resize",
    "resize": "112x112 by OpenCV INTER_AREA on the float gray frames",
    "normalise": "(x / 255 - 0.4136) / 0.1700",
}
INPUT_SIDE = 112  # the visual front's flatten of 4x4x512 fixes it
MELS_PER_FRAME, MELS = 4, 80  # the audio front's input per video frame: 10 ms hops at 25 fps, 80 mel bins
Tensors = Mapping[str, Mapping[str, np.ndarray]]
Shapes = Mapping[str, Mapping[str, tuple[int, ...]]]


def read_checkpoint(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The four state_dicts of ``path`` as float32 numpy arrays (``torch.load`` with ``weights_only``, on the CPU)."""
    try:
        import torch
    except ImportError:
        raise ConfigError(
            "reading a PyTorch checkpoint needs torch: pip install 'mpview[torch]' (the optional `torch` extra)"
        ) from None
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such checkpoint file")
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many kinds for a file it cannot read (pickle, zip, runtime errors)
        reason = " ".join(str(exc).split())[:300]
        raise DataError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {reason})") from None
    if not isinstance(loaded, Mapping):
        raise DataError(f"{path}: holds a {type(loaded).__name__}, not the dict of {', '.join(GROUPS)}")
    check_groups(path, loaded)
    tensors: dict[str, dict[str, np.ndarray]] = {}
    for group in GROUPS:
        state = loaded[group]
        if not isinstance(state, Mapping) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            raise DataError(f"{path}: {group} is not a state_dict of tensors")
        tensors[group] = {str(k): t.detach().cpu().float().numpy() for k, t in state.items() if not k.endswith(DROPPED)}
    return tensors


def check_groups(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """Refuse a checkpoint without the four state_dicts, or with other entries beside them."""
    missing = [g for g in GROUPS if g not in checkpoint]
    extra = sorted(str(k) for k in checkpoint if k not in GROUPS)
    if missing or extra:
        found = ", ".join(sorted(map(str, checkpoint))) or "nothing"
        raise DataError(
            f"{path}: not the authors' checkpoint layout (a dict of {', '.join(GROUPS)}): "
            f"{'missing ' + ', '.join(missing) if missing else ''}{'; ' if missing and extra else ''}"
            f"{'unexpected ' + ', '.join(extra) if extra else ''} (it holds {found})"
        )


def shapes_of(tensors: Tensors) -> dict[str, dict[str, tuple[int, ...]]]:
    """Every tensor's shape, by group and key (batch norm step counters left out)."""
    return {
        group: {key: tuple(int(d) for d in np.shape(t)) for key, t in keys.items() if not key.endswith(DROPPED)}
        for group, keys in tensors.items()
    }


@dataclass(frozen=True)
class Architecture:
    """The sizes a checkpoint fixes beyond the authors' constants: classes, memory slots and heads."""

    classes: int
    slots: int
    heads: int


def architecture(shapes: Shapes) -> Architecture:
    """The head's class count and the front memory's slots and heads, read from the tensors' shapes."""
    group, head = HEAD
    needed = {(group, f"{head}.weight"), (FRONT_MEMORY, "key"), (FRONT_MEMORY, "value")}
    absent = sorted(f"{g}[{k}]" for g, k in needed if k not in shapes.get(g, {}))
    if absent:
        raise DataError(f"the checkpoint has no {', '.join(absent)}: not the authors' memory model")
    key, value = shapes[FRONT_MEMORY]["key"], shapes[FRONT_MEMORY]["value"]
    slots, width = value
    if len(key) != 2 or key[1] < 1 or width % key[1] or key[0] % slots:
        raise DataError(f"the front memory's key {key} and value {value} are not [heads * slots, {width} / heads]")
    return Architecture(classes=shapes[group][f"{head}.weight"][0], slots=slots, heads=width // key[1])


def run_options(arch: Architecture, radius: float) -> dict[str, Any]:
    """Our ``mvm`` options for the authors' system with the checkpoint's sizes, evaluated on LRW's 112 px view."""
    return {
        "front": "ir-resnet18",
        "back": "mstcn",
        "audio_front": "ir",
        "units": 512,
        "levels": 4,
        "dropout": 0.0,
        "slots": arch.slots,
        "heads": arch.heads,
        "radius": radius,
        "augment": "lrw",
    }


def audio_shape(frames: int) -> tuple[int, int, int]:
    """The aligned mel input of the training network (its audio front holds the checkpoint's audio weights)."""
    return frames, MELS_PER_FRAME, MELS


def reorder_head(tensors: dict[str, dict[str, np.ndarray]], classes: list[str]) -> bool:
    """Put the classifier's rows in ``classes``' order; the authors' row i is the i-th of the names sorted.

    Returns whether the order changed (it does not when ``classes`` is already sorted, as LRW's manifest is).
    """
    order = sorted(classes)
    if order == list(classes):
        return False
    rows = np.array([order.index(name) for name in classes])
    group, head = HEAD
    for part in ("weight", "bias"):
        key = f"{head}.{part}"
        if key in tensors[group]:
            tensors[group][key] = tensors[group][key][rows]
    return True


@dataclass(frozen=True)
class Assignment:
    """One checkpoint tensor, the weight of ours it fills, and how its axes move to get there."""

    group: str
    key: str
    variable: Any  # a keras.Variable
    move: Callable[[np.ndarray], np.ndarray]
    where: str  # our layer and weight, for messages


def _conv_move(array: np.ndarray) -> np.ndarray:
    """[out, in, *kernel] -> [*kernel, in, out]."""
    return np.transpose(array, (*range(2, array.ndim), 1, 0))


def _dense_move(array: np.ndarray) -> np.ndarray:
    """[out, in] -> [in, out]."""
    return np.transpose(array)


def _same(array: np.ndarray) -> np.ndarray:
    return array


def _reshape_to(shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """Into ``shape`` when the size and the last axis agree (PReLU's broadcast axes, the key memory's heads axis)."""

    def move(array: np.ndarray) -> np.ndarray:
        if array.size == int(np.prod(shape)) and array.ndim and shape and array.shape[-1] == shape[-1]:
            return array.reshape(shape)
        return array

    return move


def _weight_of(layer: Any, param: str) -> tuple[Any, Callable[[np.ndarray], np.ndarray]] | None:
    """Our variable for the authors' parameter ``param`` of ``layer``, and its move; None if it has no such weight."""
    import keras

    if isinstance(layer, keras.layers.TimeDistributed):
        layer = layer.layer
    convs = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
    if isinstance(layer, convs + (keras.layers.Dense,)):
        if param == "bias":
            return getattr(layer, "bias", None), _same
        if param != "weight":
            return None
        return layer.kernel, _conv_move if isinstance(layer, convs) else _dense_move
    norms = {
        keras.layers.BatchNormalization: {
            "weight": "gamma",
            "bias": "beta",
            "running_mean": "moving_mean",
            "running_var": "moving_variance",
        },
        keras.layers.LayerNormalization: {"weight": "gamma", "bias": "beta"},
    }
    for kind, table in norms.items():
        if isinstance(layer, kind):
            if not np.isclose(layer.epsilon, TORCH_EPSILON, rtol=1e-3):
                raise ConfigError(f"layer {layer.name} has epsilon {layer.epsilon}; the checkpoint's norms use 1e-5")
            return (getattr(layer, table[param]), _same) if param in table else None
    if isinstance(layer, keras.layers.PReLU):
        return (layer.alpha, _reshape_to(_shape(layer.alpha))) if param == "weight" else None
    variable = getattr(layer, param, None)
    if isinstance(variable, keras.Variable):
        return variable, _reshape_to(_shape(variable))
    return None


def _shape(variable: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in variable.shape)


def named_layers(model: Any) -> dict[str, Any]:
    """Every layer of ``model`` by name, nested models' layers included (a shared layer once)."""
    import keras

    found: dict[str, Any] = {}

    def walk(container: Any) -> None:
        for layer in container.layers:
            if found.get(layer.name, layer) is not layer:
                raise ConfigError(f"two layers of the model are named {layer.name!r}: the checkpoint cannot map")
            found[layer.name] = layer
            if isinstance(layer, keras.Model):
                walk(layer)

    walk(model)
    return found


def _resolve(layers: dict[str, Any], group: str, key: str) -> tuple[Any, str] | None:
    """The layer object a checkpoint key's module path names, and the parameter name."""
    *path, param = key.split(".")
    prefix = GROUPS[group]
    for cut in range(len(path), -1, -1):
        layer = layers.get("_".join([prefix, *path[:cut]]))
        if layer is None:
            continue
        for attribute in path[cut:]:
            layer = getattr(layer, attribute, None)
            if layer is None:
                return None
        return layer, param
    return None


def plan(model: Any, shapes: Shapes) -> list[Assignment]:
    """Where every checkpoint tensor goes in ``model``; refuses, naming it, any tensor with no weight of ours or the
    wrong shape, and any weight of ours no tensor fills."""
    layers = named_layers(model)
    weights = {id(v): v for v in model.weights}
    assignments, filled, extra, misshaped = [], {}, [], []
    for group in GROUPS:
        for key, shape in shapes.get(group, {}).items():
            if key.endswith(DROPPED):
                continue
            resolved = _resolve(layers, group, key)
            target = _weight_of(*resolved) if resolved else None
            if target is None or id(target[0]) not in weights:
                extra.append(f"{group}[{key}]")
                continue
            variable, move = target
            where = f"{variable.path} {_shape(variable)}"
            moved = move(np.broadcast_to(np.float32(0), shape)).shape
            if tuple(moved) != _shape(variable):
                misshaped.append(f"{group}[{key}] has shape {list(shape)}, which does not fit {where}")
                continue
            if id(variable) in filled:
                extra.append(f"{group}[{key}] (a second tensor for {variable.path}, after {filled[id(variable)]})")
                continue
            filled[id(variable)] = f"{group}[{key}]"
            assignments.append(Assignment(group, key, variable, move, where))
    if extra:
        raise DataError(f"checkpoint tensors with no weight in our model: {_listed(extra)}")
    if misshaped:
        raise DataError(f"checkpoint tensors of the wrong shape: {_listed(misshaped)}")
    missing = [_missing(v, assignments) for i, v in weights.items() if i not in filled]
    if missing:
        raise DataError(f"the checkpoint lacks tensors for weights of our model: {_listed(missing)}")
    return assignments


# our weight names -> the authors' parameter names
TORCH_NAMES = {
    "kernel": "weight",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
    "alpha": "weight",
}


def _missing(variable: Any, assignments: list[Assignment]) -> str:
    """A weight no tensor fills, named by the checkpoint key it wants when a sibling weight's key shows its module."""
    owner, _, name = variable.path.rpartition("/")
    for a in assignments:
        if a.variable.path.rpartition("/")[0] == owner:
            module = a.key.rpartition(".")[0]
            key = ".".join(filter(None, (module, TORCH_NAMES.get(name, name))))
            return f"{a.group}[{key}] (for {variable.path} {_shape(variable)})"
    return f"{variable.path} {_shape(variable)}"


def _listed(items: list[str], most: int = 8) -> str:
    """The first ``most`` items, and how many more."""
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return "; ".join(items[:most]) + more


def load_into(model: Any, tensors: Tensors) -> int:
    """Fill every weight of ``model`` from the checkpoint ``tensors`` (checked by ``plan`` first); the count filled."""
    assignments = plan(model, shapes_of(tensors))
    for a in assignments:
        a.variable.assign(np.ascontiguousarray(a.move(np.asarray(tensors[a.group][a.key], np.float32))))
    return len(assignments)
