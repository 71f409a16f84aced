"""Each paper's training recipe as one named preset (``train --recipe NAME``), read off the authors' code.

A preset fixes the model and its options and the fitting settings (optimizer, learning-rate schedule, batch, epochs,
early stopping, augmentation, audio masking, test-time augmentation) to the values the authors' code uses; every
setting names the file it comes from. Settings given beside a preset override it and are recorded as deviations
(``deviations``). This module imports no Keras: an unknown name is refused before any backend starts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from pipeline.errors import ConfigError

OPTIMIZERS = ("rmsprop", "adam", "adamw", "sgd")
CLIP_MODES = ("value", "norm", "update")  # each gradient entry, the gradient's norm, the step (Srivastava et al.)
SCHEDULES = ("constant", "plateau")
# the fitting settings of a run without a preset (TrainConfig's fields left unset resolve to these)
STANDARD: dict[str, Any] = {
    "model": "mplstm",
    "epochs": 50,
    "lr": 1e-3,
    "patience": 10,
    "early_stopping": True,
    "optimizer": None,  # the model's own (RMSprop; Adam for mvm)
    "weight_decay": 0.0,
    "momentum": 0.0,
    "clip": None,
    "clip_mode": "value",
    "lr_schedule": "constant",
    "lr_patience": 5,
    "lr_factor": 0.5,
    "timesteps": None,  # the manifest's clip length
}


@dataclass(frozen=True)
class Source:
    """Where a preset's value comes from: the authors' value as their code states it, and the file."""

    authors: str
    file: str


@dataclass(frozen=True)
class Preset:
    """One paper's recipe: the model, its options, the fitting settings, and what they come from."""

    name: str
    description: str
    repository: str
    model: str
    options: Mapping[str, Any]  # model options
    fitting: Mapping[str, Any]  # TrainConfig settings (keys of STANDARD)
    sources: Mapping[str, Source]  # setting -> the authors' value and file
    tta: bool = False  # evaluate adds the mirrored clip's logits (the authors' test-time augmentation)
    features: Mapping[str, Any] = field(default_factory=dict)  # the extract settings the features must have
    pending: tuple[str, ...] = field(default_factory=tuple)  # what the authors do that no option sets yet

    def settings(self) -> dict[str, Any]:
        """The settings the preset fixes, as a flat mapping (model options by name)."""
        return {"model": self.model, **self.fitting, **self.options}


NETWORK = "Library/Network.py"
MVM_TRAIN, MVM_README, MVM_DATA, MVM_TEST = "train.py", "README.md", "src/data/vid_aud_lrw.py", "test.py"
COMBO = "models/lstm_combo_1layer_mnist.pbtxt"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "mplstm-released",
            "MP-LSTM as the released code trains it (Sepas-Moghaddam et al., CVPR 2021)",
            "arsm/MPLSTM",
            "mplstm",
            {"released": True, "units": 256, "dropout": 0.2, "batch_size": 60},
            {
                "optimizer": "rmsprop",
                "lr": 1e-3,
                "epochs": 500,
                "early_stopping": False,
                "lr_schedule": "constant",
                "timesteps": 20,
            },
            {
                "model": Source("MP-LSTM cell, bidirectional, temporal attention, flatten, softmax", NETWORK),
                "released": Source("U_f in the candidate, hard sigmoid gates", "Library/MPLSTM_3inputs.py"),
                "units": Source("hidden_layer_size = 256", NETWORK),
                "dropout": Source("LSTM(dropout=0.20)", NETWORK),
                "batch_size": Source("batch_size = 60", NETWORK),
                "optimizer": Source("optimizer='rmsprop' (Keras 2.1.5 defaults: rho 0.9)", NETWORK),
                "lr": Source("Keras 2.1.5 RMSprop default lr 0.001", NETWORK),
                "epochs": Source("no_of_epochs = 500", NETWORK),
                "early_stopping": Source("none: only ModelCheckpoint(monitor='val_acc', save_best_only)", NETWORK),
                "lr_schedule": Source("constant (no callback changes it)", NETWORK),
                "timesteps": Source("self.no_frames = 20 (longer cut, shorter zero-padded)", NETWORK),
                "features.preprocess": Source(
                    "cv2 BGR, INTER_AREA to 224, vgg16.preprocess_input", "Library/CNNfeature_extractor.py"
                ),
            },
            features={"preprocess": "released"},
            pending=(
                "their batch generator walks the training set in file order and drops the last partial batch; "
                "ours shuffles every epoch and keeps it",
            ),
        ),
        Preset(
            "mvm-lrw",
            "the multi-head visual-audio memory on LRW (Kim, Yeo, Ro, AAAI 2022)",
            "ms-dot-k/Multi-head-Visual-Audio-Memory",
            "mvm",
            {
                "front": "ir-resnet18",
                "audio_front": "ir",
                "back": "mstcn",
                "levels": 4,
                "dropout": 0.0,
                "units": 512,
                "slots": 112,
                "heads": 8,
                "radius": 16.0,
                "batch_size": 40,
                "augment": "lrw",
                "freq_mask": 10,
                "time_mask": 20,
            },
            {
                "optimizer": "adamw",
                "lr": 1e-3,
                "weight_decay": 1e-5,
                "lr_schedule": "plateau",
                "lr_patience": 5,
                "lr_factor": 0.5,
                "epochs": 400,
                "early_stopping": False,
                "timesteps": 29,
            },
            {
                "model": Source("Visual_front, Audio_front, Memory, Temp_classifier", MVM_TRAIN),
                "front": Source(
                    "3D stem, IR-ResNet-18 per frame, BN, dropout 0.4, flatten, linear 512, LayerNorm",
                    "src/models/visual_front.py",
                ),
                "audio_front": Source(
                    "2 strided convs, an IR block, dropout 0.4, linear 5120->512, LayerNorm; output detached",
                    "src/models/audio_front.py",
                ),
                "back": Source("multi-scale TCN, 4 blocks, dropout 0.2", "src/models/temporal_classifier.py"),
                "levels": Source(
                    "4 memories: the front's (loss 1/3), after TCN blocks 1-3 (2/9 each)",
                    "train.py, src/models/temporal_classifier.py",
                ),
                "units": Source("512-d audio features and value memory", "src/models/audio_front.py"),
                "slots": Source("--slot 112", MVM_TRAIN),
                "heads": Source("--head 8", MVM_TRAIN),
                "radius": Source("--radius 16.0", MVM_TRAIN),
                "dropout": Source(
                    "none before the time-mean head (the memory's 0.5 and the MS-TCN's 0.2 are built in)",
                    "src/models/temporal_classifier.py",
                ),
                "batch_size": Source("--batch_size 40 (the training command; train.py's default is 55)", MVM_README),
                "augment": Source(
                    "--augmentations --mixup: crop offset +-5, flip, 56 px and 3-frame erasing, mixup Beta(0.4, 0.4)",
                    MVM_DATA,
                ),
                "freq_mask": Source("FrequencyMasking(freq_mask_param=10)", MVM_DATA),
                "time_mask": Source("TimeMasking(time_mask_param=20)", MVM_DATA),
                "optimizer": Source("torch.optim.AdamW", MVM_TRAIN),
                "lr": Source("--lr 0.001", MVM_TRAIN),
                "weight_decay": Source("--weight_decay 0.00001", MVM_TRAIN),
                "lr_schedule": Source("lr * 0.5 once `endurance` reaches --endurance, then endurance = 0", MVM_TRAIN),
                "lr_patience": Source("--endurance 5", MVM_TRAIN),
                "lr_factor": Source("g['lr'] = current_lr * 0.50", MVM_TRAIN),
                "epochs": Source("--epochs 400", MVM_TRAIN),
                "early_stopping": Source("none: every epoch runs, the best val accuracy is kept", MVM_TRAIN),
                "timesteps": Source("--max_timesteps 29", MVM_TRAIN),
                "tta": Source("--test_aug: the mirrored clip's logits added", MVM_TEST),
            },
            tta=True,
            pending=(
                "their audio features: torchaudio's magnitude spectrogram (n_fft 400) -> mel 80 -> dB, CMVN over the "
                "whole clip before the centre crop (ours: power spectrum, n_fft 512, CMVN over the aligned frames)",
                "their validation before training (fast_validate, 2 batches) and per-epoch checkpoints of every "
                "epoch; ours keeps the best and the last",
            ),
        ),
        Preset(
            "composite-mnist",
            "composite LSTM pretraining on Moving MNIST (Srivastava, Mansimov, Salakhutdinov, ICML 2015)",
            "emansim/unsupervised-videos",
            "single",
            {
                "units": 2048,
                "pretrain": "composite",
                "future": 10,
                "conditional": "teacher",
                "peepholes": True,
                "lstm_init": "authors",
                "pretrain_loss": "sum",
                "pretrain_data": "moving-digits",
                "pretrain_steps": 500,
                "pretrain_epochs": 20_000,
                "classifier_head": "time-average",
                "batch_size": 80,
            },
            {
                "optimizer": "sgd",
                "lr": 1e-4,
                "momentum": 0.9,
                "weight_decay": 1e-4,
                "clip": 1e-4,
                "clip_mode": "update",
                "lr_schedule": "constant",
                "timesteps": 10,
            },
            {
                "model": Source("one LSTM encoder, a reconstruction and a future decoder", "lstm_combo.py"),
                "units": Source("num_hid: 2048", COMBO),
                "pretrain": Source("lstm_combo: reconstruction + future prediction", "lstm_combo.py"),
                "future": Source("future_seq_length: 10", COMBO),
                "timesteps": Source("num_frames 20 - future_seq_length 10 (dec_seq_length: 10)", COMBO),
                "conditional": Source("dec_conditional: true, future_conditional: true (fed the true frame)", COMBO),
                "batch_size": Source("batch_size: 80", "datasets/bouncing_mnist.pbtxt"),
                "optimizer": Source("momentum SGD (Param.Update; the RMSprop there is commented out)", "util.py"),
                "lr": Source("epsilon: 0.0001", COMBO),
                "momentum": Source("momentum: 0.9", COMBO),
                "weight_decay": Source(
                    "l2_decay: 0.0001 on w_* (weights, peepholes), not b: added to the gradient", COMBO
                ),
                "clip": Source("gradient_clip: 0.0001", COMBO),
                "clip_mode": Source("dw_history_.upper_bound_mod: the momentum step clipped", "util.py"),
                "lr_schedule": Source(
                    "constant: eps_decay_factor 0.9 per 10000 steps is computed but Update uses self.eps_", "util.py"
                ),
                "pretrain_epochs": Source("max_iters: 10000000 = 20000 x 500 steps", COMBO),
                "pretrain_steps": Source("validate_after: 500, save_after: 500", COMBO),
                "pretrain_data": Source(
                    "fresh two-digit clips every batch (BouncingMNISTDataHandler)", "data_handler.py"
                ),
                "peepholes": Source("w_diag in every LSTM", COMBO),
                "lstm_init": Source("w_* UNIFORM scale 0.01, w_diag 0.1, b CONSTANT 0", COMBO),
                "pretrain_loss": Source("the loss summed over pixels, frames and clips", "lstm_combo.py"),
                "classifier_head": Source("a softmax every timestep, averaged over time", "lstm_classifier.py"),
                "features.backbone": Source("the frames' pixels, binary_data: true", COMBO),
                "features.pixel_size": Source("image_size: 64 (4096 inputs)", "datasets/bouncing_mnist.pbtxt"),
                "features.pca": Source("none: input_dims 4096", COMBO),
            },
            features={"backbone": "pixels", "pixel_size": 64, "pca": 0},
            pending=(
                "MNIST's 60,000 digits: ours are scikit-learn's 1797 8x8 digits upscaled (MNIST cannot be downloaded "
                "here); the motion model is theirs",
                "their fixed 10,000-clip validation file scored every 500 steps (ours: the training loss per epoch)",
                "their classifier config is UCF101's (L2 1e-5, no momentum, no clipping): the recipe fine-tunes with "
                "the pretraining's SGD, and its epochs and early stopping are our defaults",
            ),
        ),
    )
}


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse combinations the optimizers cannot honour (momentum for Adam, an update clip outside SGD)."""
    name, clip_mode = settings.get("name"), settings.get("clip_mode")
    if name not in OPTIMIZERS:
        raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if settings.get("momentum") and name in ("adam", "adamw"):
        raise ConfigError(f"--momentum applies to sgd and rmsprop, not --optimizer {name}")
    if clip_mode == "update" and name != "sgd":
        raise ConfigError("--clip-mode update clips SGD's step: give it with --optimizer sgd")
    if clip_mode not in (None, *CLIP_MODES):
        raise ConfigError(f"--clip-mode must be one of {', '.join(CLIP_MODES)}, got {clip_mode!r}")


def get(name: str) -> Preset:
    """The preset ``name``; an unknown one is refused with the closest name and the list."""
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.5)
    guess = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"unknown --recipe {name!r}{guess}; choose from {', '.join(PRESETS)}")


def resolve(
    preset: Preset | None, fitting: Mapping[str, Any], options: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fitting settings with the unset (None) ones taken from ``preset`` (else ``STANDARD``), and ``options``
    put over the preset's model options (none of them for a model other than the preset's)."""
    wanted = preset.settings() if preset else {}
    chosen = {k: (v if v is not None else wanted.get(k, STANDARD[k])) for k, v in fitting.items()}
    if preset and chosen["model"] == preset.model:
        return chosen, {**preset.options, **options}
    return chosen, dict(options)


def deviations(preset: Preset, fitting: Mapping[str, Any], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Where resolved ``fitting`` settings and model ``options`` differ from ``preset``'s: ``{setting, preset,
    given}`` each (a value left unset took the preset's, so only given ones can differ). Under another model than
    the preset's, its model options are listed as dropped."""
    wanted = preset.settings()
    found = [
        {"setting": k, "preset": wanted.get(k, STANDARD[k]), "given": v}
        for k, v in fitting.items()
        if v != wanted.get(k, STANDARD[k])
    ]
    if fitting["model"] != preset.model:
        return found + [
            {"setting": k, "preset": v, "given": "dropped with the model"} for k, v in preset.options.items()
        ]
    return found + [
        {"setting": k, "preset": preset.options.get(k), "given": v}
        for k, v in options.items()
        if v != preset.options.get(k)
    ]


def describe_override(override: Mapping[str, Any]) -> str:
    """One override as ``setting: preset -> given``."""
    return f"{override['setting']}: {override['preset']!r} -> {override['given']!r}"
