"""Keras 2 HDF5 weight files in the layout of keras-vggface's releases.

Write, load, refuse mismatches, use via the registry.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from pipeline.backbones import build_backbone, vggface
from pipeline.backbones.pixels import resize
from pipeline.backbones.weights import WeightFileError, load_keras2_weights, read_layout, write_keras2_weight_file
from pipeline.errors import ConfigError
from pipeline.storage.atomic import file_sha256


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
            f"conv1/7x7_s2/bn/{w}:0" for w in ("gamma", "beta", "moving_mean", "moving_variance")
        ]
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
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(target(x, training=False)),
        keras.ops.convert_to_numpy(source(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


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
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(model.get_layer("conv5_3").kernel), handle["conv5_3/conv5_3/kernel:0"][()]
        )


def test_wrong_architecture_is_refused_naming_the_layer(
    resnet_source: tuple[keras.Model, Path], vgg_file: Path
) -> None:
    with pytest.raises(WeightFileError) as info:
        load_keras2_weights(vggface.senet50(include_top=False), resnet_source[1])
    assert "'conv2_1_1x1_down' of model 'vggface_senet50' is absent from the file" in str(info.value)
    assert info.value.file == str(resnet_source[1])
    with pytest.raises(
        WeightFileError, match="layer 'conv1_1' in the file has no counterpart in model 'vggface_resnet50'"
    ):
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
    assert (
        str(info.value)
        == f"{vgg_copy}: layer 'conv3_2': weight 'conv3_2/bias:0' has shape (255,) in the file, (256,) in the model"
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("conv1_1").kernel), before)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda g: g.attrs.__setitem__("weight_names", [b"conv2_1/kernel:0"]),
            "layer 'conv2_1': the file has 1 weights, the model 2",
        ),
        (
            lambda g: g.attrs.__setitem__("weight_names", [b"conv2_1/bias:0", b"conv2_1/kernel:0"]),
            "layer 'conv2_1': file weight 'conv2_1/bias:0' where the model has 'kernel'",
        ),
        (
            lambda g: g.attrs.__setitem__("weight_names", [b"conv2_1/kernel:0", b"conv2_1/missing:0"]),
            "layer 'conv2_1': weight 'conv2_1/missing:0' is listed in weight_names but not stored",
        ),
    ],
)
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
    assert [len(chunk) for _, chunk in backbone.model_inputs(frames)] == [4, 1]
    assert all(chunk.dtype == np.uint8 for _, chunk in backbone.model_inputs(frames))  # the CPU hands over uint8 only


def test_vgg16_backbone_embeds_fc7(vgg_file: Path) -> None:
    backbone = build_backbone("vgg16", weights="random", batch_size=2)
    assert backbone.dim == 4096 and backbone.model.layers[-1].name == "fc7" and backbone.preprocess == "v1"
    assert backbone.embed(np.zeros((1, 64, 64), np.uint8)).shape == (1, 4096)
    with pytest.raises(WeightFileError, match="layer 'fc6' of model 'vggface_vgg16_fc7' is absent from the file"):
        load_keras2_weights(backbone.model, vgg_file)  # a no-top file cannot serve the fc7 embedding


# --- preprocessing in the graph, against the CPU path, on real crops ----------------------------------------------


@pytest.fixture(scope="module")
def real_crops(grid_dir: Path) -> dict[tuple[str, int, int], np.ndarray]:
    """uint8 RGB ROI crops of a GRID clip as prepare stores them.

    Mouth 96 and face 112 (enlarged), face 256 (shrunk).
    """
    from pipeline.media.roi import RoiConfig, crop_clip
    from pipeline.media.video import read_frames

    frames = read_frames(grid_dir / "lbax4n.mpg")
    return {
        (roi, h, w): crop_clip(frames, RoiConfig(roi=roi, size=(h, w)), "lbax4n").clip[::20]
        for roi, h, w in (("mouth", 96, 96), ("face", 112, 112), ("face", 256, 256), ("mouth", 60, 100))
    }


def relative_l2(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per-frame ``|got - expected| / |expected|``."""
    return np.linalg.norm(got - expected, axis=1) / np.linalg.norm(expected, axis=1)


@pytest.mark.parametrize("name, mode", [("resnet50", "v2"), ("vgg16-pool5", "v1")])
def test_in_graph_preprocessing_matches_the_cpu_path(
    name: str, mode: str, real_crops: dict, resnet_source: tuple[keras.Model, Path], vgg_file: Path
) -> None:
    from pipeline.backbones.preprocess import cpu_inputs

    backbone = build_backbone(name, weights=str(resnet_source[1] if name == "resnet50" else vgg_file), batch_size=4)
    assert backbone.preprocess == mode
    for shape, crops in real_crops.items():
        expected = np.asarray(backbone.model.predict_on_batch(cpu_inputs(crops, mode)), np.float32)
        error = relative_l2(backbone.embed(crops), expected.reshape(len(crops), -1))
        assert error.max() < 1e-3, (shape, error)
    gray = real_crops["mouth", 96, 96][..., 0]
    expected = np.asarray(backbone.model.predict_on_batch(cpu_inputs(gray, mode)), np.float32).reshape(len(gray), -1)
    assert relative_l2(backbone.embed(gray), expected).max() < 1e-3


def test_released_mode_is_bit_exact_with_the_released_code(real_crops: dict) -> None:
    """A transcription of arsm/MPLSTM Library/CNNfeature_extractor.py per frame gives the same floats as our layer.

    The transcription: OpenCV's BGR frame, INTER_AREA to 224, img_to_array, keras.applications.vgg16.preprocess_input;
    our layer is fed the stored RGB crop.
    """
    import cv2

    from pipeline.backbones.preprocess import area_resize

    for shape, crops in real_crops.items():
        released = []
        for rgb in crops:
            image = np.ascontiguousarray(rgb[..., ::-1])  # what cv2.VideoCapture.read() hands the released code
            img = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
            released.append(keras.applications.vgg16.preprocess_input(np.expand_dims(img.astype("float32"), 0))[0])
        ours = keras.ops.convert_to_numpy(vggface.Preprocess("released")(area_resize(crops)))
        np.testing.assert_array_equal(ours, np.stack(released), err_msg=str(shape))


def test_released_mode_embeds_through_the_registry(resnet_source: tuple[keras.Model, Path], real_crops: dict) -> None:
    from pipeline.backbones.preprocess import cpu_inputs

    backbone = build_backbone("resnet50", weights=str(resnet_source[1]), batch_size=4, preprocess="released")
    crops = real_crops["mouth", 96, 96]
    expected = np.asarray(backbone.model.predict_on_batch(cpu_inputs(crops, "released")), np.float32)
    np.testing.assert_allclose(backbone.embed(crops), expected.reshape(len(crops), -1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown preprocessing 'caffe'"):
        build_backbone("resnet50", weights="random", preprocess="caffe")
    with pytest.raises(ConfigError, match="VGGFace backbones only"):
        build_backbone("pixels", preprocess="released")
