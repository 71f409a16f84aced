"""One interface for every spatial backbone the extract stage can use: ``build_backbone(name).embed(frames)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol, runtime_checkable

import numpy as np

from pipeline.backbones.pixels import DEFAULT_SIZE, PcaProjection, PixelBackbone, as_frames
from pipeline.backbones.preprocess import AUTO, resolve_mode
from pipeline.backbones.resolve import RANDOM, VGGFACE, Downloader, checked_sha256, resolve_weights, urllib_download
from pipeline.errors import ConfigError
from pipeline.execution.logs import get_logger

if TYPE_CHECKING:
    import keras

log = get_logger(__name__)

RANDOM_LABEL = "random (smoke test only)"


@runtime_checkable
class Backbone(Protocol):
    """A frame embedder: ``embed([N,H,W(,C)] uint8) -> [N, dim] float32``; ``weights_label`` goes into every output."""

    name: str
    dim: int
    weights_label: str

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed a batch of uint8 frames (RGB or gray), resizing and preprocessing them itself."""
        ...


@dataclass(frozen=True)
class KerasSpec:
    """Which VGGFace model a backbone name means and where its embedding is taken."""

    arch: str
    include_top: bool
    pooling: str | None
    output_layer: str | None  # None: the model's own output


KERAS_SPECS = {
    "vgg16": KerasSpec("vgg16", True, None, "fc7"),
    "vgg16-pool5": KerasSpec("vgg16", False, "avg", None),
    "resnet50": KerasSpec("resnet50", False, "avg", None),
    "senet50": KerasSpec("senet50", False, "avg", None),
}
BACKBONES = (*KERAS_SPECS, "dlib", "pixels")


def _bucket(n: int, batch_size: int) -> int:
    """Padded size for a chunk of ``n`` frames: the next power of two, at most ``batch_size`` (few compiled shapes)."""
    return min(batch_size, 1 << max(0, n - 1).bit_length())


class KerasBackbone:
    """A VGGFace model cut at its embedding layer, behind its in-graph preprocessing, run in fixed-size batches.

    The CPU only hands over the stored uint8 frames (cut into padded chunks); resizing to 224, the channel order
    and the means are the model's first layer (:class:`pipeline.backbones.vggface.Preprocess`), so they run
    batched on the device. The ``released`` mode resizes on the CPU with OpenCV, as the released code did.
    """

    def __init__(
        self, name: str, model: keras.Model, preprocess: str, weights_label: str, batch_size: int = 32
    ) -> None:
        self.name, self.model, self.weights_label = name, model, weights_label
        self.preprocess, self.batch_size = preprocess, batch_size
        self.dim = int(model.output.shape[-1])
        self.input_size = int(model.inputs[0].shape[1])
        self._feeds: dict[tuple[int, ...], keras.Model] = {}

    def feed_model(self, frame_shape: tuple[int, ...]) -> keras.Model:
        """The model taking uint8 frames of ``frame_shape`` (H, W, C) straight from the shards.

        Built once per shape.
        """
        model = self._feeds.get(frame_shape)
        if model is None:
            from pipeline.backbones.vggface import with_preprocessing

            model = self._feeds[frame_shape] = with_preprocessing(self.model, self.preprocess, frame_shape)
        return model

    def model_inputs(self, batch: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """``[N,H,W(,C)]`` uint8 RGB/gray frames -> per chunk of ``batch_size``, ``(frames in it, uint8 model input)``.

        Whole chunks are views of the frames; only a last, partial chunk is copied into a buffer padded with
        black frames (bucketed to a power of two, so few shapes are compiled).
        """
        from pipeline.backbones.preprocess import MODES, area_resize

        frames = as_frames(batch)
        if MODES[self.preprocess].cpu_area_resize:
            frames = area_resize(frames, self.input_size)
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start : start + self.batch_size]
            count, size = len(chunk), _bucket(len(chunk), self.batch_size)
            if size > count:
                chunk = np.concatenate([chunk, np.zeros((size - count,) + chunk.shape[1:], np.uint8)])
            yield count, chunk

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """``[N,H,W(,C)]`` uint8 RGB/gray frames -> ``[N, dim]`` float32: ``model_inputs`` through ``feed_model``."""
        out = np.empty((len(batch), self.dim), np.float32)
        start = 0
        for count, inputs in self.model_inputs(batch):
            result = self.feed_model(inputs.shape[1:]).predict_on_batch(inputs)
            out[start : start + count] = np.asarray(result, np.float32).reshape(len(inputs), -1)[:count]
            start += count
        return out


def _keras_backbone(
    name: str,
    weights: str | None,
    cache_dir: Path | str | None,
    batch_size: int,
    downloader: Downloader,
    preprocess: str,
) -> KerasBackbone:
    """Build a VGGFace backbone and load (or, for 'random', skip) its weights."""
    import keras

    from pipeline.backbones import vggface
    from pipeline.backbones.weights import load_keras2_weights

    spec = KERAS_SPECS[name]
    path = resolve_weights(spec.arch, spec.include_top, weights, cache_dir, downloader)
    model = vggface.build(spec.arch, spec.include_top, spec.pooling)
    if path is None:
        log.warning("backbone %s uses random weights: embeddings are for smoke tests only", name)
        label = RANDOM_LABEL
    else:
        label = f"sha256:{checked_sha256(path)}"
        load_keras2_weights(model, path)
        log.info("backbone %s: weights %s (%s)", name, path, label)
    if spec.output_layer:
        model = keras.Model(
            model.input, model.get_layer(spec.output_layer).output, name=f"{model.name}_{spec.output_layer}"
        )
    return KerasBackbone(name, model, preprocess, label, batch_size)


def preprocessing_for(name: str, preprocess: str = AUTO) -> str:
    """The concrete preprocessing backbone ``name`` applies ('none' for dlib and pixels); ConfigError for a bad mode."""
    if name in KERAS_SPECS:
        return resolve_mode(preprocess, KERAS_SPECS[name].arch)
    if preprocess != AUTO:
        raise ConfigError(f"--preprocess {preprocess} applies to the VGGFace backbones only ({', '.join(KERAS_SPECS)})")
    return "none"


def build_backbone(
    name: str,
    weights: str | None = VGGFACE,
    *,
    cache_dir: Path | str | None = None,
    batch_size: int = 32,
    pixel_size: int = DEFAULT_SIZE,
    pca: Path | str | None = None,
    downloader: Downloader = urllib_download,
    preprocess: str = AUTO,
) -> Backbone:
    """The backbone ``name`` (one of :data:`BACKBONES`); ``weights`` is 'vggface', 'random' or a file path.

    For ``dlib`` a path replaces the bundled descriptor model; ``pixels`` takes no weights but an optional
    PCA ``.npz`` (``pca``). ``preprocess`` picks a VGGFace backbone's preprocessing (``pipeline.backbones.preprocess``).
    """
    mode = preprocessing_for(name, preprocess) if name in BACKBONES else AUTO
    if name in KERAS_SPECS:
        return _keras_backbone(name, weights, cache_dir, batch_size, downloader, mode)
    if name == "dlib":
        from pipeline.backbones.dlib_descriptor import DlibDescriptor

        custom = weights not in (None, VGGFACE, RANDOM)
        if weights == RANDOM:
            log.info("dlib has no random mode; using the bundled descriptor model")
        return DlibDescriptor(weights if custom else None)
    if name == "pixels":
        return PixelBackbone(pixel_size, PcaProjection.load(pca) if pca is not None else None)
    raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
