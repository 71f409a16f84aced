"""PyTorch modules with the state_dict layout of Kim, Yeo and Ro's released memory model (AAAI 2022), for tests.

Written here from a reading of the authors' ``src/models`` (visual_front, audio_front, resnet, memory,
temporal_classifier): each module registers its children under the authors' attribute names and in their order, so
``state_dict()`` yields the very keys and shapes of their checkpoint (``v_front_state_dict``, ``a_front_state_dict``,
``mem_state_dict``, ``tcn_state_dict``). Only the test-time path is implemented (video -> front memory recall ->
MS-TCN with its three memories recalling -> time mean -> logits), in eval mode. Imports torch: import it after
``pytest.importorskip("torch")``.

``python tests/models/mvm_torch_reference.py`` rewrites the committed key-and-shape fixture ``SHAPES_FIXTURE``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

SHAPES_FIXTURE = Path(__file__).with_name("mvm_state_dict_shapes.json")
GROUPS = ("v_front_state_dict", "a_front_state_dict", "mem_state_dict", "tcn_state_dict")
WIDTH = 512  # the fronts' and the memories' value width
TCN_WIDTH = 768  # 3 kernel sizes x 256
KERNELS = (3, 5, 7)
LRW_CLASSES = 500


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


class IRBlock2d(nn.Module):
    """Improved residual block: BN, conv, BN, PReLU, strided conv, BN; a 1x1 conv + BN shortcut unless dims match."""

    def __init__(self, inputs: int, outputs: int, stride: int, identity: bool) -> None:
        super().__init__()
        self.res_layer = nn.Sequential(
            _bn2d(inputs),
            nn.Conv2d(inputs, outputs, 3, 1, 1, bias=False),
            _bn2d(outputs),
            nn.PReLU(outputs),
            nn.Conv2d(outputs, outputs, 3, stride, 1, bias=False),
            _bn2d(outputs),
        )
        self.shortcut_layer = (
            None if identity else nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), _bn2d(outputs))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut_layer is None else self.shortcut_layer(x)
        return skip + self.res_layer(x)


class FlattenRows(nn.Module):
    """[N, C, H, W] -> [N, C*H*W] in C, H, W order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class IRResNet18(nn.Module):
    """Four stages of two IR blocks (the first with a shortcut), then BN, dropout, flatten, linear, LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        widths = ((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, WIDTH, 2))
        for n, (inputs, outputs, stride) in enumerate(widths, start=1):
            stage = nn.Sequential(IRBlock2d(inputs, outputs, stride, False), IRBlock2d(outputs, outputs, 1, True))
            setattr(self, f"layer{n}", stage)
        self.out_layer = nn.Sequential(
            _bn2d(WIDTH), nn.Dropout(0.4), FlattenRows(), nn.Linear(WIDTH * 4 * 4, WIDTH), nn.LayerNorm(WIDTH)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n in range(1, 5):
            x = getattr(self, f"layer{n}")(x)
        return self.out_layer(x)


class VisualFront(nn.Module):
    """Gray clips [B, 1, T, 112, 112] -> 3D conv stem, BN, PReLU, max pool -> IR-ResNet-18 per frame -> [B, T, 512]."""

    def __init__(self) -> None:
        super().__init__()
        self.frontend = nn.Sequential(
            nn.Conv3d(1, 64, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.PReLU(64),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        self.resnet = IRResNet18()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.frontend(x)
        batch, channels, steps = x.shape[:3]
        frames = x.permute(0, 2, 1, 3, 4).reshape(batch * steps, channels, *x.shape[3:])
        return self.resnet(frames).reshape(batch, steps, -1)


class AudioFront(nn.Module):
    """Mels [B, 1, 80, 4T] -> two strided convs, an IR block, BN, dropout -> linear to 512 per video frame."""

    def __init__(self) -> None:
        super().__init__()
        self.frontend = nn.Sequential(
            nn.Conv2d(1, 128, 3, 2, 1),
            _bn2d(128),
            nn.PReLU(128),
            nn.Conv2d(128, 256, 3, 2, 1),
            _bn2d(256),
            nn.PReLU(256),
        )
        self.Res_block = nn.Sequential(IRBlock2d(256, 256, 1, True), _bn2d(256), nn.Dropout(0.4))
        self.Linear = nn.Sequential(nn.Linear(256 * 20, WIDTH), nn.LayerNorm(WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Res_block(self.frontend(x))
        batch, channels, bins, steps = x.shape
        rows = x.reshape(batch, channels * bins, steps).transpose(1, 2)
        return self.Linear(rows)


class Memory(nn.Module):
    """Multi-head key memory [heads*slots, 512/heads] addressing a value memory [slots, 512]; ``v_up`` when
    ``audio_up`` (the TCN's memories, whose query width ``dim`` is not the audio's)."""

    def __init__(self, dim: int = WIDTH, slots: int = 112, heads: int = 8, radius: float = 16.0, audio_up=False):
        super().__init__()
        self.heads, self.slots, self.radius = heads, slots, radius
        self.key = nn.Parameter(torch.randn(heads * slots, WIDTH // heads) * 0.5)
        self.value = nn.Parameter(torch.randn(slots, WIDTH) * 0.5)
        self.linear = nn.Linear(WIDTH * heads, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        if audio_up:
            self.v_up = nn.Linear(WIDTH, dim)
        self.q_embd = nn.Linear(dim, WIDTH)
        self.v_embd = nn.Linear(WIDTH, WIDTH)

    def recall(self, query: torch.Tensor) -> torch.Tensor:
        """[B, T, dim] -> norm1(query + the heads' value reads, projected and normalised), the test-time fusion."""
        batch, steps, _ = query.shape
        keys = F.normalize(self.key.reshape(self.heads, self.slots, -1), dim=-1)
        asked = F.normalize(self.q_embd(query).reshape(batch, steps, self.heads, -1), dim=-1)
        weights = torch.softmax(self.radius * torch.einsum("bthd,hsd->bths", asked, keys), dim=-1)
        reads = torch.einsum("bths,sv->bthv", weights, self.value).reshape(batch, steps, -1)
        return self.norm1(query + self.norm2(self.linear(reads)))


class BranchConv(nn.Module):
    """One branch: dilated conv (with bias), BN, symmetric trim back to the input length, PReLU."""

    def __init__(self, inputs: int, outputs: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.trim = (kernel - 1) * dilation // 2
        self.conv = nn.Conv1d(inputs, outputs, kernel, 1, (kernel - 1) * dilation, dilation)
        self.batchnorm = nn.BatchNorm1d(outputs)
        self.non_lin = nn.PReLU(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.batchnorm(self.conv(x))
        return self.non_lin(out[:, :, self.trim : out.shape[2] - self.trim])


class MultiBranchBlock(nn.Module):
    """Two rounds of three kernel-size branches concatenated, plus a 1x1 conv of the input, then PReLU."""

    def __init__(self, inputs: int, dilation: int) -> None:
        super().__init__()
        branch = TCN_WIDTH // len(KERNELS)
        for round_, width in enumerate((inputs, TCN_WIDTH)):
            for k, kernel in enumerate(KERNELS):
                setattr(self, f"cbcr{round_}_{k}", BranchConv(width, branch, kernel, dilation))
            setattr(self, f"dropout{round_}", nn.Dropout(0.2))
        self.downsample = nn.Conv1d(inputs, TCN_WIDTH, 1)
        self.relu_final = nn.PReLU(TCN_WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for round_ in range(2):
            out = torch.cat([getattr(self, f"cbcr{round_}_{k}")(out) for k in range(len(KERNELS))], dim=1)
        return self.relu_final(out + self.downsample(x))


class MultiScaleTCN(nn.Module):
    """Blocks of dilation 1, 2, 4, 8, a memory after each of the first three."""

    def __init__(self, slots: int, heads: int, radius: float) -> None:
        super().__init__()
        for n in range(1, 5):
            setattr(self, f"layer{n}", MultiBranchBlock(WIDTH if n == 1 else TCN_WIDTH, 2 ** (n - 1)))
            if n < 4:
                setattr(self, f"mem{n}", Memory(TCN_WIDTH, slots, heads, radius, audio_up=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 512, T] -> [B, 768, T]; each memory recalls on [B, T, C]."""
        for n in range(1, 5):
            x = getattr(self, f"layer{n}")(x)
            if n < 4:
                x = getattr(self, f"mem{n}").recall(x.transpose(1, 2)).transpose(1, 2)
        return x


class TCNHead(nn.Module):
    """The multi-scale TCN and the linear classifier of its time mean."""

    def __init__(self, classes: int, slots: int, heads: int, radius: float) -> None:
        super().__init__()
        self.mb_ms_tcn = MultiScaleTCN(slots, heads, radius)
        self.tcn_output = nn.Linear(TCN_WIDTH, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tcn_output(self.mb_ms_tcn(x.transpose(1, 2)).mean(dim=2))


class TempClassifier(nn.Module):
    """The authors' ``Temp_classifier``: its one child ``tcn``."""

    def __init__(self, classes: int = LRW_CLASSES, slots: int = 112, heads: int = 8, radius: float = 16.0) -> None:
        super().__init__()
        self.tcn = TCNHead(classes, slots, heads, radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tcn(x)


def build(classes: int = LRW_CLASSES, slots: int = 112, heads: int = 8, radius: float = 16.0) -> dict[str, nn.Module]:
    """The four modules as the authors' ``train.py`` builds them for LRW, by checkpoint group, in eval mode."""
    modules = {
        "v_front_state_dict": VisualFront(),
        "a_front_state_dict": AudioFront(),
        "mem_state_dict": Memory(WIDTH, slots, heads, radius),
        "tcn_state_dict": TempClassifier(classes, slots, heads, radius),
    }
    return {group: module.eval() for group, module in modules.items()}


def randomise(modules: dict[str, nn.Module], seed: int = 0) -> None:
    """Random weights everywhere, and batch norm statistics, scales and shifts far from their initial 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in modules.values():
            for sub in module.modules():
                if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                    for tensor, low, high in (
                        (sub.weight, 0.5, 1.5),
                        (sub.bias, -0.2, 0.2),
                        (sub.running_mean, -0.2, 0.2),
                        (sub.running_var, 0.5, 2.0),
                    ):
                        tensor.copy_(low + (high - low) * torch.rand(tensor.shape, generator=generator))
                    sub.num_batches_tracked.fill_(1000)
                elif isinstance(sub, (nn.PReLU, nn.LayerNorm)):
                    for tensor in sub.parameters():
                        tensor.copy_(0.5 * torch.rand(tensor.shape, generator=generator) + 0.1)
            for name, tensor in module.named_parameters():
                if name.endswith("bias") and tensor.dim() == 1:
                    tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))


def checkpoint(modules: dict[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """The dict the authors ``torch.save``: one state_dict per module group."""
    return {group: module.state_dict() for group, module in modules.items()}


@torch.no_grad()
def inference_logits(modules: dict[str, nn.Module], clips: torch.Tensor) -> torch.Tensor:
    """The authors' test path on normalised gray clips [B, 1, T, 112, 112]: visual front, front memory, TCN."""
    visual = modules["v_front_state_dict"](clips)
    return modules["tcn_state_dict"](modules["mem_state_dict"].recall(visual))


def parameter_counts(modules: dict[str, nn.Module]) -> dict[str, int]:
    """Trainable parameters per group."""
    return {group: sum(p.numel() for p in module.parameters()) for group, module in modules.items()}


def shapes(modules: dict[str, nn.Module]) -> dict[str, dict[str, list[int]]]:
    """Per group, every state_dict key's shape, in state_dict order: the fixture's content."""
    return {
        group: {key: list(tensor.shape) for key, tensor in module.state_dict().items()}
        for group, module in modules.items()
    }


def write_fixture(path: Path = SHAPES_FIXTURE) -> None:
    """Write the LRW model's keys and shapes as JSON, one key a line."""
    groups = []
    for group, keys in shapes(build()).items():
        lines = ",\n".join(f"  {json.dumps(key)}: {json.dumps(shape)}" for key, shape in keys.items())
        groups.append(f"{json.dumps(group)}: {{\n{lines}\n}}")
    path.write_text("{\n" + ",\n".join(groups) + "\n}\n")


if __name__ == "__main__":
    write_fixture(Path(sys.argv[1]) if len(sys.argv) > 1 else SHAPES_FIXTURE)
