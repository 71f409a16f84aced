"""Keras 2 HDF5 weight files in the layout of keras-vggface's releases: write, load, refuse mismatches, use via the registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from pipeline.storage.atomic import file_sha256
from pipeline.backbones import build_backbone
from pipeline.backbones import vggface
from pipeline.backbones.pixels import resize
from pipeline.backbones.weights import WeightFileError, load_keras2_weights, read_layout, write_keras2_weight_file


def randomize(model: keras.Model, seed: int) -> keras.Model:
    """Give every bias and batch-norm statistic random values (kernels keep their random initialisation)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if variable.name in ("gamma", "moving_variance"):
                values.append(rng.uniform(0.5, 1.5, shape))
            elif variable.name in ("beta", "moving_mean", "bias"):
                values.append(rng.normal(0.0, 0.1, shape))
            else:
                values.append(keras.ops.convert_to_numpy(variable))
        layer.set_weights(values)
    return model


@pytest.fixture(scope="module")
def resnet_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    """A randomised no-top ResNet50 and its weights in the official file layout."""
    model = randomize(vggface.resnet50(include_top=False), seed=1)
    return model, write_keras2_weight_file(model, tmp_path_factory.mktemp("w") / "rcmalli_vggface_tf_notop_resnet50.h5")


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No-top VGG16 weights in the official layout (copied and edited by the refusal tests)."""
    model = randomize(vggface.vgg16(include_top=False), seed=2)
    return write_keras2_weight_file(model, tmp_path_factory.mktemp("w") / "rcmalli_vggface_tf_notop_vgg16.h5")


@pytest.fixture
def vgg_copy(vgg_file: Path, tmp_path: Path) -> Path:
    """A private copy of the VGG16 fixture to edit."""
    return Path(shutil.copy(vgg_file, tmp_path / vgg_file.name))


def images(n: int, seed: int = 0) -> np.ndarray:
    """Preprocessed-looking float inputs."""
    return np.random.default_rng(seed).uniform(-120, 120, (n, 224, 224, 3)).astype(np.float32)


def test_fixture_has_the_official_layout(resnet_source: tuple[keras.Model, Path]) -> None:
    model, path = resnet_source
    with h5py.File(path, "r") as handle:
        names = [n.decode() for n in handle.attrs["layer_names"]]
        assert handle.attrs["layer_names"].dtype.kind == "S"
        assert names[:4] == ["input_1", "conv1/7x7_s2", "conv1/7x7_s2/bn", "activation_1"]
        assert len(names) == len(model.layers)
        conv = handle["conv1/7x7_s2"]
        assert [w.decode() for w in conv.attrs["weight_names"]] == ["conv1/7x7_s2/kernel:0"]
        assert conv["conv1/7x7_s2/kernel:0"].shape == (7, 7, 3, 64)
        assert [w.decode() for w in handle["conv1/7x7_s2/bn"].attrs["weight_names"]] == [
            f"conv1/7x7_s2/bn/{w}:0" for w in ("gamma", "beta", "moving_mean", "moving_variance")]
        assert len(handle["activation_1"].attrs["weight_names"]) == 0
    layout = dict(read_layout(path))
    assert layout["conv2_1_1x1_proj"] == [("conv2_1_1x1_proj/kernel:0", (1, 1, 64, 256))]
    assert sum(len(w) for w in layout.values()) == len(model.weights)


def _assert_same_weights(a: keras.Model, b: keras.Model) -> None:
    """Every variable of ``b`` equals its counterpart in ``a``."""
    assert len(a.weights) == len(b.weights)
    for expected, got in zip(a.weights, b.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected))


def test_round_trip_reproduces_the_forward_pass(resnet_source: tuple[keras.Model, Path]) -> None:
    source, path = resnet_source
    target = vggface.resnet50(include_top=False)
    load_keras2_weights(target, path)
    _assert_same_weights(source, target)
    x = images(2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x, training=False)),
                               keras.ops.convert_to_numpy(source(x, training=False)), rtol=1e-5, atol=1e-5)


def test_full_model_save_nests_under_model_weights(resnet_source: tuple[keras.Model, Path], tmp_path: Path) -> None:
    source = resnet_source[0]
    path = write_keras2_weight_file(source, tmp_path / "full.h5", full_model=True)
    with h5py.File(path, "r") as handle:
        assert "layer_names" not in handle.attrs and "layer_names" in handle["model_weights"].attrs
    target = vggface.resnet50(include_top=False)
    load_keras2_weights(target, path)
    _assert_same_weights(source, target)


def test_chunked_layer_names_attribute(vgg_copy: Path) -> None:
    with h5py.File(vgg_copy, "r+") as handle:
        names = handle.attrs["layer_names"]
        del handle.attrs["layer_names"]
        handle.attrs["layer_names0"], handle.attrs["layer_names1"] = names[:7], names[7:]
    model = vggface.vgg16(include_top=False)
    load_keras2_weights(model, vgg_copy)
    with h5py.File(vgg_copy, "r") as handle:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("conv5_3").kernel),
                                      handle["conv5_3/conv5_3/kernel:0"][()])


def test_wrong_architecture_is_refused_naming_the_layer(resnet_source: tuple[keras.Model, Path], vgg_file: Path) -> None:
    with pytest.raises(WeightFileError) as info:
        load_keras2_weights(vggface.senet50(include_top=False), resnet_source[1])
    assert "'conv2_1_1x1_down' of model 'vggface_senet50' is absent from the file" in str(info.value)
    assert info.value.file == str(resnet_source[1])
    with pytest.raises(WeightFileError, match="layer 'conv1_1' in the file has no counterpart in model 'vggface_resnet50'"):
        load_keras2_weights(vggface.resnet50(include_top=False), vgg_file)


def test_shape_mismatch_is_refused_before_any_change(vgg_copy: Path) -> None:
    with h5py.File(vgg_copy, "r+") as handle:
        group = handle["conv3_2"]
        del group["conv3_2/bias:0"]
        group.create_dataset("conv3_2/bias:0", data=np.zeros(255, np.float32))
    model = vggface.vgg16(include_top=False)
    before = keras.ops.convert_to_numpy(model.get_layer("conv1_1").kernel)
    with pytest.raises(WeightFileError) as info:
        load_keras2_weights(model, vgg_copy)
    assert str(info.value) == f"{vgg_copy}: layer 'conv3_2': weight 'conv3_2/bias:0' has shape (255,) in the file, (256,) in the model"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("conv1_1").kernel), before)


@pytest.mark.parametrize("edit, message", [
    (lambda g: g.attrs.__setitem__("weight_names", [b"conv2_1/kernel:0"]), "layer 'conv2_1': the file has 1 weights, the model 2"),
    (lambda g: g.attrs.__setitem__("weight_names", [b"conv2_1/bias:0", b"conv2_1/kernel:0"]),
     "layer 'conv2_1': file weight 'conv2_1/bias:0' where the model has 'kernel'"),
    (lambda g: g.attrs.__setitem__("weight_names", [b"conv2_1/kernel:0", b"conv2_1/missing:0"]),
     "layer 'conv2_1': weight 'conv2_1/missing:0' is listed in weight_names but not stored"),
])
def test_inconsistent_layers_are_refused(vgg_copy: Path, edit, message: str) -> None:
    with h5py.File(vgg_copy, "r+") as handle:
        edit(handle["conv2_1"])
    with pytest.raises(WeightFileError, match=message):
        load_keras2_weights(vggface.vgg16(include_top=False), vgg_copy)


def test_not_a_keras_file(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=[1, 2, 3])
    with pytest.raises(WeightFileError, match="not a Keras 2 weight file"):
        load_keras2_weights(vggface.vgg16(include_top=False), path)


def test_registry_loads_the_file_and_embeds_in_batches(resnet_source: tuple[keras.Model, Path]) -> None:
    source, path = resnet_source
    backbone = build_backbone("resnet50", weights=str(path), batch_size=4)
    assert backbone.name == "resnet50" and backbone.dim == 2048
    assert backbone.weights_label == f"sha256:{file_sha256(path)}"
    frames = np.random.default_rng(3).integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    out = backbone.embed(frames)  # chunks of 4 and 1
    assert out.shape == (5, 2048) and out.dtype == np.float32
    expected = source(vggface.preprocess_input(resize(frames, 224), 2), training=False)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(expected).reshape(5, 2048), rtol=1e-4, atol=1e-4)


def test_vgg16_backbone_embeds_fc7(vgg_file: Path) -> None:
    backbone = build_backbone("vgg16", weights="random", batch_size=2)
    assert backbone.dim == 4096 and backbone.model.layers[-1].name == "fc7" and backbone.preprocess_version == 1
    assert backbone.embed(np.zeros((1, 64, 64), np.uint8)).shape == (1, 4096)
    with pytest.raises(WeightFileError, match="layer 'fc6' of model 'vggface_vgg16_fc7' is absent from the file"):
        load_keras2_weights(backbone.model, vgg_file)  # a no-top file cannot serve the fc7 embedding
