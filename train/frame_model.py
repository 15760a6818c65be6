"""Frame-wise acoustic models for streaming CTC: raw 8 kHz audio in, per-frame label logits out.

Labels (index order fixed by the streaming design): 0 blank, 1..10 the digits "0".."9", 11 filler.

The network is a temporal convolutional network: the log-mel front end of ``digitspot.train.model``
(inside the graph, so the Pi computes no features of its own), mel bands as channels, and 1-D
depthwise-separable residual blocks over time (TC-ResNet / DS-TCN). A strided stem halves the frame
rate to one output frame per 20 ms (160 samples), which halves every later layer's work.

Right context is bounded by construction. Every convolution is padded asymmetrically, so an output
frame reads at most ``right_context_samples`` of audio past its own end. The daemon gives each decided
frame exactly that much lookahead, and keeps only frames whose left receptive field lies inside the
window: the decided frames are then computed from the same audio as if the model ran on the whole
stream, and training on long strings or on 1 s crops teaches exactly what serving asks. The one
window-wide quantity is the front end's peak-relative level, a scalar per window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from digitspot.train.model import FrontEndConfig, LogMelFrontEnd

LABELS: tuple[str, ...] = ("blank", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "filler")
BLANK = 0
FILLER = 11
N_LABELS = len(LABELS)


def digit_label(digit: int) -> int:
    """Label index of a spoken digit ("oh" is 0)."""
    return digit + 1


@dataclass(frozen=True)
class BlockSpec:
    """One residual block: depthwise kernel over time, its dilation, and how many of its taps lie in the
    future (``right``, in output frames; 0 is causal, ``(kernel - 1) * dilation // 2`` is centred)."""

    kernel: int = 5
    dilation: int = 1
    right: int = 1


def _default_blocks() -> tuple[BlockSpec, ...]:
    return (BlockSpec(5, 1, 1), BlockSpec(5, 1, 1), BlockSpec(5, 2, 1), BlockSpec(5, 2, 1),
            BlockSpec(5, 2, 0), BlockSpec(5, 1, 0))


@dataclass(frozen=True)
class FrameModelConfig:
    """Shape of a frame model. The defaults are the student (~130k parameters)."""

    channels: int = 124
    blocks: tuple[BlockSpec, ...] = field(default_factory=_default_blocks)
    stem_kernel: int = 5
    time_stride: int = 2  # output hop = time_stride x the front end's 80-sample hop
    dropout: float = 0.1
    n_labels: int = N_LABELS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FrameModelConfig:
        data = dict(data)
        data["blocks"] = tuple(BlockSpec(**b) for b in data.get("blocks", []))
        return cls(**data)


def student_config() -> FrameModelConfig:
    return FrameModelConfig()


def teacher_config() -> FrameModelConfig:
    """Half again as wide and a block deeper, with the student's right context: the teacher's frame posteriors
    are distillation targets frame by frame, so its CTC spikes must fall where the student can put them. Its
    left context (750 ms) still fits the part of the serving window before a decided frame."""
    blocks = (BlockSpec(5, 1, 1), BlockSpec(5, 1, 1), BlockSpec(5, 2, 1), BlockSpec(5, 2, 1),
              BlockSpec(5, 2, 0), BlockSpec(5, 1, 0), BlockSpec(5, 1, 0))
    return FrameModelConfig(channels=192, blocks=blocks, dropout=0.15)


class TimePad(nn.Module):
    """Zero padding on the time axis, ``left`` frames before and ``right`` after (exports as ONNX Pad)."""

    def __init__(self, left: int, right: int):
        super().__init__()
        self.left, self.right = left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, (self.left, self.right))


class SeparableBlock(nn.Module):
    """Depthwise temporal conv -> BN -> ReLU -> pointwise conv -> BN, plus the input, -> ReLU."""

    def __init__(self, channels: int, spec: BlockSpec, dropout: float):
        super().__init__()
        span = (spec.kernel - 1) * spec.dilation
        if not 0 <= spec.right <= span:
            raise ValueError(f"block right context {spec.right} outside 0..{span} for kernel {spec.kernel} "
                             f"dilation {spec.dilation}")
        self.pad = TimePad(span - spec.right, spec.right)
        self.depthwise = nn.Conv1d(channels, channels, spec.kernel, dilation=spec.dilation, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.pointwise = nn.Conv1d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.depthwise(self.pad(x))))
        y = self.bn2(self.pointwise(self.dropout(y)))
        return self.act(x + y)


class FrameNet(nn.Module):
    """``audio`` float32 [batch, samples] -> ``logits`` float32 [batch, n_frames, n_labels].

    Fully convolutional: it trains on any length of audio and exports for the fixed serving window.
    Output frame ``j`` covers samples ``[j * frame_hop, j * frame_hop + frame_length)``.
    """

    def __init__(self, cfg: FrameModelConfig | None = None, frontend: FrontEndConfig | None = None,
                 specaugment: bool = True):
        super().__init__()
        cfg, frontend = cfg or FrameModelConfig(), frontend or FrontEndConfig()
        self.cfg = cfg
        self.frontend_cfg = frontend
        self.frontend = LogMelFrontEnd(frontend)
        self.input_norm = nn.BatchNorm1d(frontend.n_mels)
        self.specaugment = specaugment
        s, k = cfg.time_stride, cfg.stem_kernel
        # Stem: output frame j reads mel frames [s*j - (k - s), s*j + s - 1], i.e. its own s mel frames
        # and earlier ones, never later ones: the stem adds no right context.
        self.stem = nn.Sequential(
            TimePad(k - s, s - 1),
            nn.Conv1d(frontend.n_mels, cfg.channels, k, stride=s, bias=False),
            nn.BatchNorm1d(cfg.channels),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*[SeparableBlock(cfg.channels, b, cfg.dropout) for b in cfg.blocks])
        self.head = nn.Conv1d(cfg.channels, cfg.n_labels, 1)

    # --- geometry the daemon needs (the card's fields) ----------------------------------------------

    @property
    def frame_hop_samples(self) -> int:
        return self.frontend_cfg.hop * self.cfg.time_stride

    @property
    def frame_length_samples(self) -> int:
        """The stretch of audio an output frame stands for: its ``time_stride`` STFT frames."""
        return self.frontend_cfg.hop * (self.cfg.time_stride - 1) + self.frontend_cfg.n_fft

    @property
    def right_context_frames(self) -> int:
        return sum(b.right for b in self.cfg.blocks)

    @property
    def right_context_samples(self) -> int:
        """Audio past a frame's end that its logits depend on: the lookahead the daemon must give it."""
        return self.right_context_frames * self.frame_hop_samples

    @property
    def left_context_samples(self) -> int:
        """Audio before a frame's start that its logits depend on."""
        s, k = self.cfg.time_stride, self.cfg.stem_kernel
        left_frames = sum((b.kernel - 1) * b.dilation - b.right for b in self.cfg.blocks)
        return left_frames * self.frame_hop_samples + (k - s) * self.frontend_cfg.hop

    def n_frames(self, samples: int) -> int:
        mel = 1 + (samples - self.frontend_cfg.n_fft) // self.frontend_cfg.hop
        return -(-mel // self.cfg.time_stride)

    # --- forward --------------------------------------------------------------------------------------

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel, [batch, n_mels, mel_frames]."""
        return self.input_norm(self.frontend(audio).squeeze(1))

    def _specaugment(self, x: torch.Tensor) -> torch.Tensor:
        """Two frequency masks of up to 6 bands and time masks of up to 40 ms every ~0.5 s, training only.
        Masks short in time: a longer one would erase a whole short digit that the target still names."""
        b, n_mels, n_frames = x.shape
        floor = x.amin(dim=(1, 2), keepdim=True)
        mask = torch.zeros_like(x, dtype=torch.bool)
        mel_idx = torch.arange(n_mels, device=x.device).view(1, -1, 1)
        for _ in range(2):
            width = torch.randint(0, 7, (b, 1, 1), device=x.device)
            start = (torch.rand(b, 1, 1, device=x.device) * (n_mels - width).clamp(min=1)).long()
            mask |= (mel_idx >= start) & (mel_idx < start + width)
        t_idx = torch.arange(n_frames, device=x.device).view(1, 1, -1)
        for _ in range(max(1, n_frames // 50)):
            width = torch.randint(0, 5, (b, 1, 1), device=x.device)
            start = (torch.rand(b, 1, 1, device=x.device) * (n_frames - width).clamp(min=1)).long()
            mask |= (t_idx >= start) & (t_idx < start + width)
        return torch.where(mask, floor.expand_as(x), x)

    def body(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel [batch, n_mels, mel_frames] -> logits [batch, n_frames, n_labels]."""
        x = self.blocks(self.stem(features))
        return self.head(x).transpose(1, 2)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.features(audio)
        if self.training and self.specaugment:
            x = self._specaugment(x)
        return self.body(x)

    def geometry(self) -> dict:
        return {"frame_hop_samples": self.frame_hop_samples, "frame_length_samples": self.frame_length_samples,
                "right_context_samples": self.right_context_samples,
                "left_context_samples": self.left_context_samples}


def build_frame_model(cfg: FrameModelConfig | dict, specaugment: bool = True) -> FrameNet:
    if isinstance(cfg, dict):
        cfg = FrameModelConfig.from_dict(cfg)
    return FrameNet(cfg, specaugment=specaugment)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
