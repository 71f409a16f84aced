"""Multi-head visual-audio memory lip reader (Kim, Yeo, Ro, AAAI 2022).

Per head, a key memory [slots, head_dim] is addressed by softmax(radius * cosine(query_h, key)); each head
reads the shared value memory [slots, dim] of audio features, and the heads' reads are projected back to one
recalled audio feature that is added to the visual feature. In training the audio feature addresses the value
memory itself (softmax(radius * cosine)) and the value read replaces the recalled one on a second, "audio"
stream; that call adds, through ``self.add_loss``, the reconstruction loss sum_t |1 - cos(read, audio)| (mean
over the batch) and the slot decorrelation loss 0.5 * sum |I - V V^T| over the L2-normalised value slots.
The visual stream reads a stopped-gradient value memory, so the key memory learns from the classification
loss of the visual stream alone and the value memory from the audio stream, as in the authors' code. One
deliberate difference: the authors also stop the gradient into the audio addressing, so their audio front-end
never trains; here the audio stream's classification loss trains it through the addressing (the reconstruction
target stays stopped, so the audio features cannot collapse onto the memory).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import keras
from keras import ops

VISUAL = "visual"
AUDIO = "audio"


def _l2_normalise(x, axis: int = -1):
    """x / ||x|| along ``axis`` (safe at zero)."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), 1e-12))


@keras.saving.register_keras_serializable(package="mpview")
class VisualAudioMemory(keras.layers.Layer):
    """Key (visual) / value (audio) memory; ``call(query)`` recalls audio, ``call(query, audio)`` is the training read.

    Inputs are [B, T, dim]; the audio features must have the query's width ``dim``. Output [B, T, dim]:
    LayerNorm(query + read) followed by dropout.
    """

    def __init__(
        self,
        slots: int = 112,
        heads: int = 8,
        radius: float = 16.0,
        head_dim: int | None = None,
        dropout: float = 0.5,
        reconstruction_weight: float = 1.0,
        decorrelation_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.slots = slots
        self.heads = heads
        self.radius = radius
        self.head_dim = head_dim
        self.dropout_rate = dropout
        self.reconstruction_weight = reconstruction_weight
        self.decorrelation_weight = decorrelation_weight

    def build(self, query_shape: tuple, audio_shape: tuple | None = None) -> None:
        """Create both memories (normal, std 0.5) and the projections for a query width ``dim``."""
        dim = query_shape[-1]
        head_dim = self.head_dim or max(1, dim // self.heads)
        init = keras.initializers.RandomNormal(stddev=0.5)
        self.key = self.add_weight(shape=(self.heads, self.slots, head_dim), initializer=init, name="key_memory")
        self.value = self.add_weight(shape=(self.slots, dim), initializer=init, name="value_memory")
        self.query_proj = keras.layers.Dense(self.heads * head_dim, name="query_proj")
        self.audio_proj = keras.layers.Dense(dim, name="audio_proj")
        self.recall_proj = keras.layers.Dense(dim, name="recall_proj")
        self.recall_norm = keras.layers.LayerNormalization(name="recall_norm")
        self.audio_norm = keras.layers.LayerNormalization(name="audio_norm")
        self.fuse_norm = keras.layers.LayerNormalization(name="fuse_norm")
        self.dropout = keras.layers.Dropout(self.dropout_rate)
        self.query_proj.build((None, dim))
        self.audio_proj.build((None, dim))
        self.recall_proj.build((None, self.heads * dim))
        for norm in (self.recall_norm, self.audio_norm, self.fuse_norm):
            norm.build((None, dim))

    def address(self, query):
        """Per-head addressing weights [B, T, heads, slots]: softmax over slots of radius * cosine(query_h, key_h)."""
        batch, steps = ops.shape(query)[0], ops.shape(query)[1]
        q = ops.reshape(self.query_proj(query), (batch, steps, self.heads, -1))
        key = _l2_normalise(ops.cast(self.key, q.dtype))
        similarity = ops.einsum("bthd,hsd->bths", _l2_normalise(q), key)
        return ops.softmax(self.radius * similarity, axis=-1)

    def recall(self, query):
        """Audio recalled from the visual query alone: the heads' value reads, projected and normalised [B, T, dim]."""
        batch, steps = ops.shape(query)[0], ops.shape(query)[1]
        value = ops.stop_gradient(ops.cast(self.value, query.dtype))
        reads = ops.einsum("bths,sd->bthd", self.address(query), value)
        return self.recall_norm(self.recall_proj(ops.reshape(reads, (batch, steps, -1))))

    def read_by_audio(self, audio):
        """Value-memory read addressed by the audio features themselves [B, T, dim] (the training target path)."""
        value = ops.cast(self.value, audio.dtype)
        query = _l2_normalise(self.audio_proj(audio))
        similarity = ops.einsum("btd,sd->bts", query, _l2_normalise(value))
        return ops.einsum("bts,sd->btd", ops.softmax(self.radius * similarity, axis=-1), value)

    def memory_losses(self, audio, read):
        """(reconstruction, decorrelation): mean over batch of sum_t |1 - cos(read, audio)|, 0.5 sum |I - V V^T|."""
        cosine = ops.sum(_l2_normalise(read) * _l2_normalise(ops.stop_gradient(audio)), axis=-1)
        reconstruction = ops.mean(ops.sum(ops.abs(1.0 - cosine), axis=-1))
        value = _l2_normalise(ops.cast(self.value, "float32"))
        gram = ops.matmul(value, ops.transpose(value))
        decorrelation = 0.5 * ops.sum(ops.abs(ops.eye(self.slots, dtype="float32") - gram))
        return ops.cast(reconstruction, "float32"), decorrelation

    def call(self, query, audio=None, training=None):
        """Visual recall when ``audio`` is None; otherwise the audio read, adding the two memory losses."""
        if audio is None:
            read = self.recall(query)
        else:
            raw = self.read_by_audio(audio)
            reconstruction, decorrelation = self.memory_losses(audio, raw)
            self.add_loss(self.reconstruction_weight * reconstruction + self.decorrelation_weight * decorrelation)
            read = self.audio_norm(raw)
        return self.dropout(self.fuse_norm(query + read), training=training)

    def compute_output_shape(self, query_shape: tuple, audio_shape: tuple | None = None) -> tuple:
        """Same as the query."""
        return query_shape

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            **super().get_config(),
            "slots": self.slots,
            "heads": self.heads,
            "radius": self.radius,
            "head_dim": self.head_dim,
            "dropout": self.dropout_rate,
            "reconstruction_weight": self.reconstruction_weight,
            "decorrelation_weight": self.decorrelation_weight,
        }


class MVMModels(NamedTuple):
    """Training model (video, audio) -> {visual, audio} logits, and the lip reader video -> logits (shared weights)."""

    train: keras.Model
    infer: keras.Model


def _visual_front(video, dim: int, filters: int):
    """Mouth ROI pixels [T, H, W, C] -> 3D conv + per-frame 2D convs -> [T, dim]; embeddings [T, d] -> dense."""
    if len(video.shape) == 3:
        return keras.layers.Dense(dim, activation="relu", name="visual_embed")(video)
    x = keras.layers.Conv3D(filters, (5, 7, 7), strides=(1, 2, 2), padding="same", name="front3d")(video)
    x = keras.layers.BatchNormalization(name="front3d_bn")(x)
    x = keras.layers.Activation("relu", name="front3d_relu")(x)
    x = keras.layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="front3d_pool")(x)
    for i in range(2):
        conv = keras.layers.Conv2D(2 * filters, 3, strides=2, padding="same")
        x = keras.layers.TimeDistributed(conv, name=f"front2d_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"front2d_{i}_bn")(x)
        x = keras.layers.Activation("relu", name=f"front2d_{i}_relu")(x)
    x = keras.layers.TimeDistributed(keras.layers.GlobalAveragePooling2D(), name="front_pool")(x)
    return keras.layers.Dense(dim, name="visual_embed")(x)


def _audio_front(audio, dim: int):
    """Aligned mel features [T, k, n_mels] (or [T, d]) -> per-video-frame audio features [T, dim]."""
    if len(audio.shape) == 4:
        audio = keras.layers.Reshape((audio.shape[1], audio.shape[2] * audio.shape[3]), name="audio_flatten")(audio)
    x = keras.layers.Dense(dim, activation="relu", name="audio_embed")(audio)
    x = keras.layers.Conv1D(dim, 3, padding="same", activation="relu", name="audio_conv")(x)
    return keras.layers.Dense(dim, name="audio_out")(x)


def _fresh(optimizer: str | keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """A new optimizer instance (the two models must not share one), from a name or another instance's config."""
    return keras.optimizers.get(keras.optimizers.serialize(keras.optimizers.get(optimizer)))


FRONTS = ("small", "resnet18")
BACKS = ("tcn", "mstcn")
MSTCN_WIDTH = 768  # 3 kernels x 256 channels, as Kim et al. (after Ma et al.)


def _temporal_blocks(back: str, dim: int, levels: int, dropout: float) -> list:
    """The back-end as a list of per-level block makers ``x -> x``: dilated conv blocks (``tcn``, one per level) or the
    four MS-TCN blocks (``mstcn``, memories before the first ``levels`` of them)."""
    if back == "tcn":

        def small(level: int):
            conv = keras.layers.Conv1D(dim, 3, dilation_rate=2**level, padding="same", name=f"temporal{level}")
            norm = keras.layers.LayerNormalization(name=f"temporal{level}_norm")
            return lambda x: norm(keras.layers.Add()([x, keras.layers.Activation("relu")(conv(x))]))

        return [small(level) for level in range(levels)]
    from pipeline.models.fronts import TCN_DILATIONS, tcn_block

    if levels > len(TCN_DILATIONS):
        raise ValueError(
            f"--back mstcn has {len(TCN_DILATIONS)} blocks: at most {len(TCN_DILATIONS)} memory levels, got {levels}"
        )

    def block(level: int):
        shared: dict = {}

        def apply(x):
            if "model" not in shared:  # one set of weights for both streams
                inp = keras.Input(shape=tuple(x.shape[1:]), name=f"mstcn{level}_in")
                shared["model"] = keras.Model(
                    inp,
                    tcn_block(inp, MSTCN_WIDTH, TCN_DILATIONS[level], dropout, f"mstcn{level}"),
                    name=f"mstcn{level}",
                )
            return shared["model"](x)

        return apply

    return [block(level) for level in range(len(TCN_DILATIONS))]


def build_mvm(
    video_shape: Sequence[int | None],
    audio_shape: Sequence[int | None],
    n_classes: int,
    dim: int = 256,
    slots: int = 112,
    heads: int = 8,
    radius: float = 16.0,
    levels: int = 2,
    filters: int = 32,
    dropout: float = 0.5,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    front: str = "small",
    back: str = "tcn",
    name: str = "mvm",
) -> MVMModels:
    """Compiled MVM lip reader: visual front -> memories and temporal blocks -> mean over time -> logits.

    ``video_shape`` is (T, H, W, C) mouth pixels or (T, d) embeddings; ``audio_shape`` (T, k, n_mels) from
    :func:`pipeline.media.audio.align_to_video` or (T, d). ``front``: ``small`` (a 3D conv and two strided 2D convs of
    ``filters``) or ``resnet18`` (Kim et al.'s: 3D stem + ResNet-18 per frame, 512 wide, then projected to ``dim``);
    ``back``: ``tcn`` (``levels`` x (memory, dilated conv block)) or ``mstcn`` (the authors' multi-scale TCN, 768
    wide, a memory before each of its first ``levels`` blocks). The same layers run a visual stream (memory recalls
    audio) and, in ``train`` only, an audio stream (memory read by the audio); both are classified by the same head
    with categorical cross-entropy on logits (``y = {"visual": onehot, "audio": onehot}``), plus the memory losses
    averaged over the levels as the authors do (each weighted 1 / ``levels``). ``infer`` takes the video alone.
    """
    if front not in FRONTS or back not in BACKS:
        raise ValueError(f"front must be among {FRONTS} and back among {BACKS}, got {front!r}, {back!r}")
    video = keras.Input(shape=tuple(video_shape), name="video")
    audio = keras.Input(shape=tuple(audio_shape), name="audio")
    if front == "resnet18" and len(video.shape) == 5:
        from pipeline.models.fronts import resnet18_video_front

        visual = resnet18_video_front(video)
        visual = visual if dim == visual.shape[-1] else keras.layers.Dense(dim, name="visual_embed")(visual)
    else:
        visual = _visual_front(video, dim, filters)
    audio_features = _audio_front(audio, dim)
    streams = {VISUAL: visual, AUDIO: visual}
    weight = 1.0 / levels
    for level, block in enumerate(_temporal_blocks(back, dim, levels, dropout)):
        if level < levels:
            width = streams[VISUAL].shape[-1]
            target = (
                audio_features
                if width == dim
                else keras.layers.Dense(width, name=f"audio_to_level{level}")(audio_features)
            )
            memory = VisualAudioMemory(
                slots,
                heads,
                radius,
                dropout=dropout,
                reconstruction_weight=weight,
                decorrelation_weight=weight,
                name=f"memory{level}",
            )
            streams = {key: memory(x) if key == VISUAL else memory(x, target) for key, x in streams.items()}
        streams = {key: block(x) for key, x in streams.items()}
    pool = keras.layers.GlobalAveragePooling1D(name="time_pool")
    drop = keras.layers.Dropout(dropout, name="dropout")
    head = keras.layers.Dense(n_classes, name="logits")
    logits = {key: head(drop(pool(x))) for key, x in streams.items()}
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    train = keras.Model({"video": video, "audio": audio}, logits, name=f"{name}_train")
    train.compile(optimizer=_fresh(optimizer), loss={VISUAL: loss, AUDIO: loss}, metrics={VISUAL: ["accuracy"]})
    infer = keras.Model(video, logits[VISUAL], name=name)
    infer.compile(optimizer=_fresh(optimizer), loss=loss, metrics=["accuracy"])
    return MVMModels(train, infer)
