"""Multi-head visual-audio memory lip reader (Kim, Yeo, Ro, AAAI 2022) as the authors' ``train.py`` builds it.

:class:`VisualAudioMemory` is the authors' ``Memory`` (``memory.py``). A key memory [heads * slots, units / heads]
is addressed per head by softmax(radius * cosine(q_embd(query)_h, key_h)); each head reads the value memory
[slots, units] (the audio width, 512), detached, and ``linear`` projects the heads' reads to the recalled audio:
the test-path fusion is dropout(norm1(query + norm2(linear(reads)))). With the audio, the value memory is addressed
by softmax(radius * cosine(v_embd(audio), value)); its read, through ``v_up`` when the query's width differs from
``units`` (the authors' ``diff_aud_vid``) and ``norm3``, gives the training-path fusion
dropout(norm1(query + read)), and the call adds, through ``self.add_loss``, the reconstruction loss (per sample
sum over time of |1 - cos(read, audio)|, mean over the batch) and the contrastive loss 0.5 * sum |I - V_n V_n^T|
over the L2-normalised value slots. The audio enters only detached (as the authors' ``value.detach()``), so no
gradient reaches the audio front.

:func:`build_mvm` wires the authors' system: visual front (:func:`modules.visual_front`), audio front
(:func:`modules.audio_front`), the front memory ``mem`` on the front's 512-d output, the MS-TCN's four blocks with
memories ``mem1..mem3`` after blocks 1-3 (768 wide), time mean, ``Linear`` head. The TCN runs on two paths: the
test path on the visually recalled features and the training path on the audio-fused ones, both classified and
both in the loss. The authors' test path also adds its TCN memories' losses; those equal the training path's in
value and gradient (they depend only on the audio and the value memory), so here each TCN memory adds its loss once
with twice the weight: the total is the authors' (front + te_tcn / 3 + tr_tcn / 3) / 3, i.e. 1/3 for the front
memory and 2/9 for each TCN memory, for both losses. The inference network is the test path alone (video only).

Layer names follow the authors' ``state_dict`` paths (see :mod:`pipeline.models.mvm.modules`): ``mem`` is
``mem_state_dict``, ``tcn_tcn_mb_ms_tcn_mem1`` is ``tcn.mb_ms_tcn.mem1`` of ``tcn_state_dict``, and
``tcn_tcn_tcn_output`` its ``tcn.tcn_output`` (the head); inside a memory the authors' attribute names are kept
(weights ``key`` and ``value``, stored in their shapes; layers ``q_embd``, ``v_embd``, ``linear``, ``norm1``,
``norm2``, ``norm3``, ``v_up``).

Lighter variants, not the authors': ``front`` ``resnet18`` (torchvision-style ResNet-18 per frame, ReLU, global
pool) or ``small`` (a 3D conv and two strided 2D convs), ``back`` ``tcn`` (one dilated conv per level, ``units``
wide, a memory on the front and after every block but the last), ``audio_front`` ``small`` (dense, conv, dense).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import keras
from keras import ops

from pipeline.models.mvm import AUDIO_FRONTS, BACKS, FRONTS, modules

VISUAL = "visual"
AUDIO = "audio"


def _normalise(x, axis: int = -1, eps: float = 1e-12):
    """x / max(||x||, eps) along ``axis`` (PyTorch's ``F.normalize``)."""
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True)), eps)


@keras.saving.register_keras_serializable(package="mpview")
class VisualAudioMemory(keras.layers.Layer):
    """The authors' ``Memory``: ``call(query)`` is the test path (visual recall), ``call(query, audio)`` the training
    path (value memory read by the audio), which adds the weighted memory losses. Query [B, T, dim], audio
    [B, T, units]; output [B, T, dim]."""

    def __init__(
        self,
        slots: int = 112,
        heads: int = 8,
        radius: float = 16.0,
        units: int = 512,
        dropout: float = 0.5,
        reconstruction_weight: float = 1.0,
        decorrelation_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if units % heads:
            raise ValueError(f"memory width {units} must divide by the {heads} heads")
        self.slots = slots
        self.heads = heads
        self.radius = radius
        self.units = units
        self.dropout_rate = dropout
        self.reconstruction_weight = reconstruction_weight
        self.decorrelation_weight = decorrelation_weight

    def build(self, query_shape: tuple, audio_shape: tuple | None = None) -> None:
        """The two memories (normal, std 0.5) and the projections; ``v_up`` when the query is not ``units`` wide."""
        dim, units = int(query_shape[-1]), self.units
        if audio_shape is not None and audio_shape[-1] != units:
            raise ValueError(f"the memory reads {units}-wide audio features, got {audio_shape[-1]}")
        self.diff_aud_vid = dim != units
        init = keras.initializers.RandomNormal(stddev=0.5)
        self.key = self.add_weight(shape=(self.heads * self.slots, units // self.heads), initializer=init, name="key")
        self.value = self.add_weight(shape=(self.slots, units), initializer=init, name="value")
        width = dim if self.diff_aud_vid else units
        self.linear = modules.torch_dense(width, units * self.heads, "linear")
        self.norm1, self.norm2, self.norm3 = (modules.layer_norm(f"norm{i}") for i in (1, 2, 3))
        self.v_up = modules.torch_dense(dim, units, "v_up") if self.diff_aud_vid else None
        self.q_embd = modules.torch_dense(units, dim, "q_embd")
        self.v_embd = modules.torch_dense(units, units, "v_embd")
        self.dropout = keras.layers.Dropout(self.dropout_rate)
        self.linear.build((None, units * self.heads))
        for norm in (self.norm1, self.norm2, self.norm3):
            norm.build((None, width))
        if self.v_up is not None:
            self.v_up.build((None, units))
        self.q_embd.build((None, dim))
        self.v_embd.build((None, units))

    def address(self, query):
        """Per-head addressing [B, T, heads, slots]: softmax over slots of radius * cosine(q_embd(query)_h, key_h)."""
        batch, steps = ops.shape(query)[0], ops.shape(query)[1]
        q = _normalise(ops.reshape(self.q_embd(query), (batch, steps, self.heads, -1)))
        key = _normalise(ops.reshape(ops.cast(self.key, q.dtype), (self.heads, self.slots, -1)))
        return ops.softmax(self.radius * ops.einsum("bthd,hsd->bths", q, key), axis=-1)

    def recall(self, query):
        """Test-path fusion before dropout: norm1(query + norm2(linear(heads' reads of the detached value memory)))."""
        batch, steps = ops.shape(query)[0], ops.shape(query)[1]
        value = ops.stop_gradient(ops.cast(self.value, query.dtype))
        reads = ops.einsum("bths,sd->bthd", self.address(query), value)
        recalled = self.norm2(self.linear(ops.reshape(reads, (batch, steps, self.heads * self.units))))
        return self.norm1(query + recalled)

    def read_by_audio(self, audio):
        """Value-memory read [B, T, units] addressed by softmax(radius * cosine(v_embd(detached audio), value))."""
        value = ops.cast(self.value, audio.dtype)
        query = _normalise(self.v_embd(ops.stop_gradient(audio)))
        similarity = ops.einsum("btd,sd->bts", query, _normalise(value))
        return ops.einsum("bts,sd->btd", ops.softmax(self.radius * similarity, axis=-1), value)

    def memory_losses(self, audio, read):
        """(reconstruction, contrastive): batch mean of sum_t |1 - cos(read, audio)|, and 0.5 * sum |I - V_n V_n^T|."""
        read, target = ops.cast(read, "float32"), ops.cast(ops.stop_gradient(audio), "float32")
        norms = ops.sqrt(ops.sum(ops.square(read), axis=-1) * ops.sum(ops.square(target), axis=-1))
        cosine = ops.sum(read * target, axis=-1) / ops.maximum(norms, 1e-8)
        reconstruction = ops.mean(ops.sum(ops.abs(1.0 - cosine), axis=-1))
        value = _normalise(ops.cast(self.value, "float32"))
        gram = ops.matmul(value, ops.transpose(value))
        contrastive = 0.5 * ops.sum(ops.abs(ops.eye(self.slots, dtype="float32") - gram))
        return reconstruction, contrastive

    def call(self, query, audio=None, training=None):
        """Test-path fusion when ``audio`` is None; else the training-path fusion, adding the two memory losses."""
        if audio is None:
            fused = self.recall(query)
        else:
            read = self.read_by_audio(audio)
            reconstruction, contrastive = self.memory_losses(audio, read)
            self.add_loss(self.reconstruction_weight * reconstruction + self.decorrelation_weight * contrastive)
            if self.v_up is not None:
                read = self.v_up(read)
            fused = self.norm1(query + self.norm3(read))
        return self.dropout(fused, training=training)

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
            "units": self.units,
            "dropout": self.dropout_rate,
            "reconstruction_weight": self.reconstruction_weight,
            "decorrelation_weight": self.decorrelation_weight,
        }


class MVMModels(NamedTuple):
    """Training model (video, audio) -> {visual, audio} logits, and the lip reader video -> logits (shared weights)."""

    train: keras.Model
    infer: keras.Model


def _visual_front(video, front: str, units: int, filters: int):
    """The visual features [B, T, units]: the authors' front, a light one, or a dense layer on embeddings [T, d]."""
    if len(video.shape) == 3:
        return keras.layers.Dense(units, activation="relu", name="visual_embed")(video)
    if front == "ir-resnet18":
        return modules.visual_front(video, units)
    if front == "resnet18":
        from pipeline.models.fronts import resnet18_video_front

        x = resnet18_video_front(video)
        return x if units == x.shape[-1] else keras.layers.Dense(units, name="visual_embed")(x)
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
    return keras.layers.Dense(units, name="visual_embed")(x)


def _audio_front(audio, audio_front: str, units: int):
    """The audio features [B, T, units] from aligned mel [T, k, n_mels] (or [T, d]): the authors' front or a light
    one (dense, conv, dense)."""
    if audio_front == "ir" and len(audio.shape) == 4:
        return modules.audio_front(audio, units)
    if len(audio.shape) == 4:
        audio = keras.layers.Reshape((audio.shape[1], audio.shape[2] * audio.shape[3]), name="audio_flatten")(audio)
    x = keras.layers.Dense(units, activation="relu", name="audio_embed")(audio)
    x = keras.layers.Conv1D(units, 3, padding="same", activation="relu", name="audio_conv")(x)
    return keras.layers.Dense(units, name="audio_out")(x)


class _DilatedBlock:
    """The light back-end's block: x + ReLU(dilated conv(x)), layer-normalised (layers built once, called per path)."""

    def __init__(self, units: int, level: int):
        self.conv = keras.layers.Conv1D(units, 3, dilation_rate=2**level, padding="same", name=f"temporal{level}")
        self.norm = keras.layers.LayerNormalization(name=f"temporal{level}_norm")

    def __call__(self, x):
        """[B, T, units] -> [B, T, units]."""
        return self.norm(keras.layers.Add()([x, keras.layers.Activation("relu")(self.conv(x))]))


def _back(back: str, width: int, units: int, levels: int, dropout: float) -> tuple[list, list[str]]:
    """The temporal blocks (callables, one set of weights for both paths) and the names of the memories after the
    first ``levels - 1`` of them."""
    if back == "tcn":
        return [_DilatedBlock(units, level) for level in range(levels)], [
            f"temporal{level}_mem" for level in range(levels - 1)
        ]
    if levels > len(modules.DILATIONS):
        raise ValueError(
            f"--back mstcn has {len(modules.DILATIONS)} blocks: at most {len(modules.DILATIONS)} memory levels "
            f"(the front's and one after each block but the last), got {levels}"
        )
    return modules.mstcn_blocks(width, dropout=dropout), [f"tcn_tcn_mb_ms_tcn_mem{i + 1}" for i in range(levels - 1)]


def _fresh(optimizer: str | keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """A new optimizer instance (the two models must not share one), from a name or another instance's config."""
    return keras.optimizers.get(keras.optimizers.serialize(keras.optimizers.get(optimizer)))


def build_mvm(
    video_shape: Sequence[int | None],
    audio_shape: Sequence[int | None],
    n_classes: int,
    units: int = 512,
    slots: int = 112,
    heads: int = 8,
    radius: float = 16.0,
    levels: int = 4,
    front: str = "ir-resnet18",
    back: str = "mstcn",
    audio_front: str = "ir",
    dropout: float = 0.0,
    memory_dropout: float = 0.5,
    tcn_dropout: float = 0.2,
    filters: int = 32,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    name: str = "mvm",
) -> MVMModels:
    """Compiled MVM pair: visual front -> front memory -> temporal blocks with memories -> time mean -> logits.

    ``video_shape`` is (T, H, W, C) mouth pixels or (T, d) embeddings; ``audio_shape`` (T, 4, n_mels) from
    :func:`pipeline.media.audio.align_to_video` or (T, d). ``levels`` counts the memories: the front's (loss weight
    1/3) and one after each of the first ``levels - 1`` blocks (each 2/(3 (levels - 1))). The defaults are the
    authors' LRW build; ``dropout`` (none in theirs) is applied before the head. ``train`` maps
    {"video", "audio"} to {"visual": test-path logits, "audio": training-path logits}, both with categorical
    cross-entropy on logits plus the memory losses; ``infer`` takes the video alone.
    """
    if front not in FRONTS or back not in BACKS or audio_front not in AUDIO_FRONTS:
        raise ValueError(
            f"front must be among {FRONTS}, back among {BACKS} and audio_front among {AUDIO_FRONTS}, "
            f"got {front!r}, {back!r}, {audio_front!r}"
        )
    if levels < 1:
        raise ValueError(f"levels counts the memories, the front's included: at least 1, got {levels}")
    video = keras.Input(shape=tuple(video_shape), name="video")
    audio = keras.Input(shape=tuple(audio_shape), name="audio")
    visual = _visual_front(video, front, units, filters)
    heard = _audio_front(audio, audio_front, units)
    blocks, memory_names = _back(back, int(visual.shape[-1]), units, levels, tcn_dropout)

    def memory(name: str, weight: float) -> VisualAudioMemory:
        return VisualAudioMemory(slots, heads, radius, units, memory_dropout, weight, weight, name=name)

    front_memory = memory("mem", 1.0 / 3.0)
    test, trained = front_memory(visual), front_memory(visual, heard)
    for i, block in enumerate(blocks):
        test, trained = block(test), block(trained)
        if i < len(memory_names):
            level = memory(memory_names[i], 2.0 / (3.0 * len(memory_names)))
            test, trained = level(test), level(trained, heard)
    pool = keras.layers.GlobalAveragePooling1D(name="tcn_mean")
    drop = keras.layers.Dropout(dropout, name="dropout")
    head = modules.torch_dense(n_classes, int(test.shape[-1]), "tcn_tcn_tcn_output")
    logits = {key: head(drop(pool(x))) for key, x in ((VISUAL, test), (AUDIO, trained))}
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    train = keras.Model({"video": video, "audio": audio}, logits, name=f"{name}_train")
    train_optimizer = _fresh(optimizer)
    train_optimizer.exclude_from_weight_decay(var_list=keras.Model(audio, heard).weights)  # it gets no gradient
    train.compile(optimizer=train_optimizer, loss={VISUAL: loss, AUDIO: loss}, metrics={VISUAL: ["accuracy"]})
    infer = keras.Model(video, logits[VISUAL], name=name)
    infer.compile(optimizer=_fresh(optimizer), loss=loss, metrics=["accuracy"])
    return MVMModels(train, infer)
