"""The models on ROI pixel clips: Deep ConvLSTM (``pipeline.models.convlstm``) and the visual-audio memory
(``pipeline.models.mvm``, whose builder returns the ``(train, infer)`` pair)."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.models.options import ConvLSTMOptions, MVMOptions
from pipeline.models.registry import ModelEntry, TwoNetworks, register, serializables


def build_convlstm(spec, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None):
    """The compiled ConvLSTM for per-perspective ``[T, H, W, C]`` clip shapes."""
    from pipeline.models import convlstm, networks

    o = spec.options
    filters = [int(f) for f in str(o.get("filters", "32,48,64")).split(",") if f.strip()]
    model = convlstm.build_convlstm([tuple(s) for s in shapes], len(spec.classes), layers=o.get("layers", "conv,pool,convlstm,pool,convlstm"), filters=filters, dropout=o.get("dropout", 0.3))
    return networks.compile_model(model, o["lr"])


def build_mvm(spec, shapes: list[tuple[int, ...]], audio_shape: tuple[int, ...] | None = None):
    """The compiled ``MVMModels`` pair for one perspective's clip shape and the frame-aligned audio's shape."""
    import keras

    from pipeline.models import mvm

    if audio_shape is None:
        raise ConfigError("mvm trains with audio: prepare with --audio")
    o = spec.options
    return mvm.build_mvm(shapes[0], audio_shape, len(spec.classes), dim=o["units"], slots=o.get("slots", 112), heads=o.get("heads", 8), radius=o.get("radius", 16.0),
                         levels=o.get("levels", 2), dropout=o.get("dropout", 0.5), front=o.get("front", "small"), back=o.get("back", "tcn"),
                         optimizer=keras.optimizers.Adam(o["lr"]))


register(ModelEntry("convlstm", "pixels", ConvLSTMOptions, build_convlstm, serializables("pipeline.models.convlstm"), (), "Deep ConvLSTM (Courtney and Sreenivas, ACPR 2019)",
                    lower=("--filters",)))
def memory_inputs(inputs: list, audio, y) -> tuple[dict, dict]:
    """The memory model's training network reads the video and the audio and learns both classifiers."""
    return {"video": inputs[0], "audio": audio}, {"visual": y, "audio": y}


MEMORY_FITTING = TwoNetworks("val_visual_accuracy", memory_inputs, training=lambda built: built.train, scoring=lambda built: built.infer)
register(ModelEntry("mvm", "pixels", MVMOptions, build_mvm, serializables("pipeline.models.mvm", "pipeline.models.fronts"), (), "multi-head visual-audio memory (Kim, Yeo, Ro, AAAI 2022)",
                    perspectives=1, lower=("--front small", "--units"),
                    audio=True, two_networks=MEMORY_FITTING))
