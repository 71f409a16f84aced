"""Backbones: VGGFace architectures (layers, parameter counts), preprocessing, weight resolution, pixels + PCA, dlib."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import h5py
import keras
import numpy as np
import pytest

from pipeline.backbones import BACKBONES, RANDOM_LABEL, Backbone, build_backbone, resolve, vggface
from pipeline.backbones.pixels import PcaProjection, PixelBackbone
from pipeline.backbones.resolve import WeightsUnavailableError, checked_sha256, resolve_weights
from pipeline.storage.atomic import file_sha256

PARAMS = {  # keras-vggface 0.6 totals (trainable + batch-norm statistics)
    ("vgg16", False): 14_714_688,
    ("vgg16", True): 145_002_878,
    ("resnet50", False): 23_561_152,
    ("resnet50", True): 41_246_071,
    ("senet50", False): 26_092_144,
    ("senet50", True): 43_777_063,
}
LAYERS = {
    ("vgg16", False): 19,
    ("vgg16", True): 26,
    ("resnet50", False): 174,
    ("resnet50", True): 176,
    ("senet50", False): 286,
    ("senet50", True): 288,
}


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, bool], object]:
    """All six VGGFace variants, built once (random weights)."""
    return {key: vggface.build(*key) for key in PARAMS}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs offline unless it injects its own downloader."""
    monkeypatch.setenv(resolve.OFFLINE_ENV, "1")


# --- architectures -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(PARAMS))
def test_parameter_and_layer_counts(models: dict, key: tuple[str, bool]) -> None:
    model = models[key]
    assert model.count_params() == PARAMS[key]
    assert len(model.layers) == LAYERS[key]
    assert tuple(model.input.shape) == (None, 224, 224, 3)


def test_vgg16_layers_in_order(models: dict) -> None:
    names = [vggface.original_name(layer.name) for layer in models["vgg16", True].layers]
    expected = ["input_1"]
    for block, convs in enumerate([2, 2, 3, 3, 3], start=1):
        expected += [f"conv{block}_{i}" for i in range(1, convs + 1)] + [f"pool{block}"]
    expected += ["flatten", "fc6", "fc6/relu", "fc7", "fc7/relu", "fc8", "fc8/softmax"]
    assert names == expected
    top = models["vgg16", True]
    assert top.get_layer("fc7").output.shape[-1] == 4096 and top.output.shape[-1] == 2622
    assert tuple(models["vgg16", False].output.shape) == (None, 7, 7, 512)


@pytest.mark.parametrize("arch", ["resnet50", "senet50"])
def test_resnet_family_layers(models: dict, arch: str) -> None:
    model = models[arch, True]
    names = [vggface.original_name(layer.name) for layer in model.layers]
    for name in (
        "conv1/7x7_s2",
        "conv1/7x7_s2/bn",
        "conv2_1_1x1_reduce",
        "conv2_1_1x1_reduce/bn",
        "conv2_1_3x3",
        "conv2_1_1x1_increase/bn",
        "conv2_1_1x1_proj",
        "conv3_4_1x1_increase",
        "conv4_6_3x3/bn",
        "conv5_3_1x1_increase/bn",
        "avg_pool",
        "classifier",
    ):
        assert name in names
    assert ("conv5_3_1x1_down" in names) == (arch == "senet50")
    assert "conv2_2_1x1_proj" not in names  # identity blocks have no projection
    weighted = [layer for layer in model.layers if layer.weights]
    assert len(weighted) == 53 * 2 + 1 + (32 if arch == "senet50" else 0)
    assert tuple(model.get_layer("avg_pool").output.shape) == (None, 1, 1, 2048)
    assert model.output.shape[-1] == 8631
    eps = model.get_layer(vggface.keras_name("conv1/7x7_s2/bn")).epsilon
    assert eps == pytest.approx(1e-4 if arch == "senet50" else 1e-3)


def test_layer_names_are_keras3_safe_and_reversible(models: dict) -> None:
    for model in models.values():
        for layer in model.layers:
            assert "/" not in layer.name
            assert vggface.keras_name(vggface.original_name(layer.name)) == layer.name
    assert vggface.keras_name("conv1/7x7_s2/bn") == "conv1__7x7_s2__bn"
    assert vggface.original_name("fc8__softmax") == "fc8/softmax"


@pytest.mark.parametrize("pooling, shape", [(None, (None, 7, 7, 512)), ("avg", (None, 512)), ("max", (None, 512))])
def test_pooling_options(pooling: str | None, shape: tuple) -> None:
    model = vggface.vgg16(include_top=False, pooling=pooling)
    assert tuple(model.output.shape) == shape and model.count_params() == PARAMS["vgg16", False]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="pooling"):
        vggface.vgg16(include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="resnet101"):
        vggface.build("resnet101")
    assert resolve.RELEASED == vggface.ARCHITECTURES


# --- preprocessing -------------------------------------------------------------------------------------------------


def test_preprocess_constants_and_channel_order() -> None:
    assert vggface.BGR_MEANS[1] == (93.5940, 104.7624, 129.1863)
    assert vggface.BGR_MEANS[2] == (91.4953, 103.8827, 131.0912)
    assert vggface.PREPROCESS_VERSION == {"vgg16": 1, "resnet50": 2, "senet50": 2}
    rgb = np.array([[[[10, 20, 30]]]], np.uint8)
    out = vggface.preprocess_input(rgb, version=2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [30 - 91.4953, 20 - 103.8827, 10 - 131.0912], rtol=1e-6)
    np.testing.assert_allclose(
        vggface.preprocess_input(rgb, 1)[0, 0, 0], [30 - 93.5940, 20 - 104.7624, 10 - 129.1863], rtol=1e-6
    )
    with pytest.raises(ValueError):
        vggface.preprocess_input(rgb, 3)


@pytest.mark.parametrize(
    "shape",
    [(96, 96, 3), (112, 112, 3), (60, 100, 3), (96, 96, 1), (150, 300, 3), (448, 448, 3), (240, 250, 3), (256, 256, 3)],
)
def test_in_graph_resize_is_opencvs(shape: tuple[int, int, int]) -> None:
    """Enlarging (INTER_LINEAR) and whole-factor shrinking match cv2 bit for bit; other shrinks up to rounding ties."""
    frames = np.random.default_rng(shape[0]).integers(0, 256, (2, *shape), dtype=np.uint8)
    layer = vggface.Preprocess("v2")
    got = keras.ops.convert_to_numpy(layer(frames))
    expected = vggface.preprocess_input(
        np.stack(
            [
                np.repeat(
                    cv2.resize(
                        f, (224, 224), interpolation=cv2.INTER_AREA if min(shape[:2]) > 224 else cv2.INTER_LINEAR
                    ).reshape(224, 224, -1),
                    3 // shape[2],
                    axis=-1,
                )
                for f in frames
            ]
        ),
        2,
    )
    off = np.abs(got - expected)
    if shape in ((240, 250, 3), (256, 256, 3)):  # INTER_AREA at a fractional factor: ties may round the other way
        assert off.max() <= 1.0 + 1e-4 and (off > 0.5).mean() < 0.03
    else:
        np.testing.assert_array_equal(got, expected)
    assert vggface.Preprocess("v2")(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 224, 224, 3)


# --- weight resolution ---------------------------------------------------------------------------------------------


def _fake_weights(url: str, dest: Path) -> None:
    """A downloader stand-in writing a tiny HDF5 file."""
    with h5py.File(dest, "w") as handle:
        handle.attrs["layer_names"] = np.array([b"input_1"])
        handle.attrs["source"] = url.encode()


def _no_download(url: str, dest: Path) -> None:
    raise AssertionError("must not download")


def test_release_names_and_urls() -> None:
    assert resolve.weight_file_name("senet50", False) == "rcmalli_vggface_tf_notop_senet50.h5"
    assert (
        resolve.weight_url("vgg16", True)
        == "https://github.com/rcmalli/keras-vggface/releases/download/v2.0/rcmalli_vggface_tf_vgg16.h5"
    )
    with pytest.raises(ValueError):
        resolve.weight_file_name("vgg19", True)


def test_random_and_explicit_paths(tmp_path: Path) -> None:
    assert resolve_weights("resnet50", False, "random", tmp_path, _no_download) is None
    given = tmp_path / "mine.h5"
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        resolve_weights("resnet50", False, str(given), tmp_path, _no_download)
    _fake_weights("x", given)
    assert resolve_weights("resnet50", False, str(given), tmp_path, _no_download) == given


def test_cache_hit_needs_no_download(tmp_path: Path) -> None:
    cached = tmp_path / "rcmalli_vggface_tf_notop_resnet50.h5"
    _fake_weights("x", cached)
    assert resolve_weights("resnet50", False, None, tmp_path, _no_download) == cached


def test_offline_error_names_file_url_and_option(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights("senet50", False, "vggface", tmp_path, _no_download)
    message = str(info.value)
    assert "rcmalli_vggface_tf_notop_senet50.h5" in message
    assert (
        "https://github.com/rcmalli/keras-vggface/releases/download/v2.0/rcmalli_vggface_tf_notop_senet50.h5" in message
    )
    assert "--weights PATH" in message and "MPVIEW_OFFLINE" in message
    assert not list(tmp_path.iterdir())


def test_offline_stops_build_backbone_before_building(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="--weights PATH"):
        build_backbone("resnet50", cache_dir=tmp_path, downloader=_no_download)


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(resolve.CACHE_ENV, str(tmp_path))
    assert resolve.default_cache_dir() == tmp_path / "weights"
    monkeypatch.delenv(resolve.CACHE_ENV)
    assert resolve.default_cache_dir() == Path.home() / ".cache" / "mpview" / "weights"


def test_download_records_checksum_and_detects_tampering(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(resolve.OFFLINE_ENV)
    urls: list[str] = []
    path = resolve_weights(
        "vgg16", True, "vggface", tmp_path, lambda url, dest: (urls.append(url), _fake_weights(url, dest))
    )
    assert urls == [resolve.weight_url("vgg16", True)]
    assert path == tmp_path / "rcmalli_vggface_tf_vgg16.h5"
    record = tmp_path / "rcmalli_vggface_tf_vgg16.h5.sha256"
    assert record.read_text().split() == [file_sha256(path), path.name]
    assert checked_sha256(path) == file_sha256(path)
    assert resolve_weights("vgg16", True, "vggface", tmp_path, _no_download) == path
    with open(path, "ab") as out:
        out.write(b"corruption")
    with pytest.raises(WeightsUnavailableError, match="does not match the SHA-256"):
        checked_sha256(path)


@pytest.mark.parametrize("failure", ["html", "oserror"])
def test_failed_download_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failure: str) -> None:
    monkeypatch.delenv(resolve.OFFLINE_ENV)

    def bad(url: str, dest: Path) -> None:
        if failure == "oserror":
            raise OSError("network unreachable")
        dest.write_bytes(b"<html>rate limited</html>")

    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights("resnet50", True, "vggface", tmp_path, bad)
    assert resolve.weight_url("resnet50", True) in str(info.value) and "--weights PATH" in str(info.value)
    assert not list(tmp_path.iterdir())


# --- pixels --------------------------------------------------------------------------------------------------------


def _mouths(n: int, seed: int = 0) -> np.ndarray:
    """Synthetic RGB mouth crops with some low-rank structure."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (4, 48, 64, 3))
    weights = rng.dirichlet(np.ones(4), n)
    return np.clip(np.einsum("nk,khwc->nhwc", weights, base) + rng.normal(0, 3, (n, 48, 64, 3)), 0, 255).astype(
        np.uint8
    )


def test_pixel_backbone_shapes_and_range() -> None:
    backbone = PixelBackbone(size=16)
    frames = _mouths(5)
    out = backbone.embed(frames)
    assert out.shape == (5, 256) and out.dtype == np.float32 and backbone.dim == 256
    assert 0.0 <= out.min() and out.max() <= 1.0
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    np.testing.assert_allclose(backbone.embed(gray), out)
    np.testing.assert_allclose(backbone.embed(gray[..., None]), out)
    flat = PixelBackbone(size=48).embed(np.full((1, 48, 48), 51, np.uint8))
    np.testing.assert_allclose(flat, 0.2, rtol=1e-6)
    assert backbone.embed(frames[:0]).shape == (0, 256)
    with pytest.raises(ValueError, match="uint8"):
        backbone.embed(frames.astype(np.float32))


def test_pca_fit_matches_sklearn_and_round_trips_without_pickle(tmp_path: Path) -> None:
    from sklearn.decomposition import PCA

    backbone = PixelBackbone(size=16)
    train, test = _mouths(40, seed=1), _mouths(6, seed=2)
    pca = backbone.fit_pca(train, n_components=8)
    assert backbone.dim == 8 and backbone.weights_label == f"pca sha256:{pca.digest()}"
    reference = PCA(n_components=8, random_state=0).fit(PixelBackbone(size=16).flat(train))
    np.testing.assert_allclose(backbone.embed(test), reference.transform(backbone.flat(test)), atol=1e-4)

    path = pca.save(tmp_path / "pca.npz")
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["components.npy", "explained_variance_ratio.npy", "mean.npy"]
    loaded = build_backbone("pixels", pixel_size=16, pca=path)
    np.testing.assert_array_equal(loaded.embed(test), backbone.embed(test))
    assert loaded.weights_label == backbone.weights_label
    with pytest.raises(ValueError, match="PCA expects 256 inputs"):
        PixelBackbone(size=32, pca=PcaProjection.load(path))


# --- registry ------------------------------------------------------------------------------------------------------


def test_registry_names_and_protocol() -> None:
    assert BACKBONES == ("vgg16", "vgg16-pool5", "resnet50", "senet50", "dlib", "pixels")
    assert isinstance(build_backbone("pixels"), Backbone)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg19")


def test_random_keras_backbone_is_labelled() -> None:
    backbone = build_backbone("vgg16-pool5", weights="random", batch_size=4)
    assert isinstance(backbone, Backbone) and backbone.dim == 512
    assert backbone.weights_label == RANDOM_LABEL == "random (smoke test only)"
    out = backbone.embed(_mouths(3))
    assert out.shape == (3, 512) and out.dtype == np.float32 and np.isfinite(out).all()


# --- dlib ----------------------------------------------------------------------------------------------------------


def _face_crops(clip: Path, indices: tuple[int, ...]) -> np.ndarray:
    """RGB face crops (detector box plus 20% margin, 160x160) of some frames of a real clip."""
    import dlib

    detector, capture, crops = dlib.get_frontal_face_detector(), cv2.VideoCapture(str(clip)), []
    for index in range(max(indices) + 1):
        ok, frame = capture.read()
        assert ok, f"cannot decode frame {index} of {clip}"
        if index in indices:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            box = detector(rgb, 1)[0]
            margin = int(0.2 * box.width())
            crop = rgb[
                max(0, box.top() - margin) : box.bottom() + margin, max(0, box.left() - margin) : box.right() + margin
            ]
            crops.append(cv2.resize(crop, (160, 160)))
    capture.release()
    return np.stack(crops)


def test_dlib_descriptor_on_a_real_face(grid_clip: Path) -> None:
    from pipeline.backbones.dlib_descriptor import DESCRIPTOR_FILE
    from pipeline.media.faces import model_path

    backbone = build_backbone("dlib")
    assert isinstance(backbone, Backbone) and backbone.name == "dlib" and backbone.dim == 128
    assert backbone.weights_label == f"sha256:{file_sha256(model_path(DESCRIPTOR_FILE))}"
    crops = _face_crops(grid_clip, (0, 40))
    out = backbone.embed(crops)
    assert out.shape == (2, 128) and out.dtype == np.float32
    norms = np.linalg.norm(out, axis=1)
    assert ((norms > 1.0) & (norms < 2.0)).all(), norms  # dlib descriptors are not L2-normalised (about 1.4)
    assert np.linalg.norm(out[0] - out[1]) < 0.6  # dlib's same-person threshold
    gray = backbone.embed(crops[..., 1])
    assert gray.shape == (2, 128) and (np.linalg.norm(gray - out, axis=1) < 0.6).all()
