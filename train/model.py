"""Networks that take raw audio and return digit logits, with the log-mel front end inside the graph.

The front end is plain ``torch.stft`` plus a mel filterbank matrix (no torchaudio), so the exported
ONNX graph contains the one and only feature implementation: the Pi feeds raw samples and cannot
compute features differently from training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class FrontEndConfig:
    """Log-mel parameters. 8 kHz audio: 32 ms FFT, 10 ms hop, 40 mel bands up to Nyquist."""

    sample_rate: int = 8000
    window_samples: int = 8000  # 1 s: every FSDD digit but a handful of slow takes fits
    n_fft: int = 256
    hop: int = 80
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float = 4000.0
    # Log-mel values are taken relative to the loudest bin of the window and floored this many
    # natural-log units below it (10 ~ 43 dB): level invariance without learning it, and a floor
    # under which noise and padding look alike.
    dynamic_range: float = 10.0

    @property
    def n_frames(self) -> int:
        return 1 + (self.window_samples - self.n_fft) // self.hop


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mel_filterbank(cfg: FrontEndConfig) -> np.ndarray:
    """Triangular HTK-style mel filters, shape ``[n_fft // 2 + 1, n_mels]``, slaney-normalised."""
    n_bins = cfg.n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, cfg.sample_rate / 2, n_bins)
    mel_points = np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2)
    hz_points = mel_to_hz(mel_points)
    fb = np.zeros((n_bins, cfg.n_mels), dtype=np.float32)
    for m in range(cfg.n_mels):
        lo, mid, hi = hz_points[m], hz_points[m + 1], hz_points[m + 2]
        up = (fft_freqs - lo) / max(mid - lo, 1e-6)
        down = (hi - fft_freqs) / max(hi - mid, 1e-6)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return fb


class LogMelFrontEnd(nn.Module):
    """``[batch, samples]`` float audio -> ``[batch, 1, n_mels, n_frames]`` log-mel, peak-relative."""

    def __init__(self, cfg: FrontEndConfig = FrontEndConfig()):
        super().__init__()
        self.cfg = cfg
        # The spectrum is computed in float64: in float32 the rounding error of the FFT is ~1e-7 of the
        # frame's peak, which the log turns into ~1e-3 differences in bins 40 dB down, and different FFT
        # implementations (PyTorch, onnxruntime) then disagree by more than the 1e-4 parity budget.
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float64),
                             persistent=False)
        self.register_buffer("mel_fb", torch.from_numpy(mel_filterbank(cfg).astype(np.float64)), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            audio.to(torch.float64),
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop,
            win_length=self.cfg.n_fft,
            window=self.window,
            center=False,
            return_complex=True,
        )  # [B, bins, frames]
        power = spec.real.pow(2) + spec.imag.pow(2)
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb)  # [B, frames, mels]
        # clamp, not "+ eps": the exporter drops a tiny added constant, which breaks ONNX/PyTorch parity.
        logmel = torch.log(torch.clamp(mel, min=1e-10))
        peak = logmel.amax(dim=(1, 2), keepdim=True)
        logmel = torch.clamp(logmel - peak, min=-self.cfg.dynamic_range)
        return logmel.to(torch.float32).transpose(1, 2).unsqueeze(1)  # [B, 1, mels, frames]


class SpecAugment(nn.Module):
    """Frequency and time masking on log-mel features, active only in training mode.

    Lives in the model's training path so exported (eval-mode) graphs contain no trace of it.
    """

    def __init__(self, freq_masks: int = 2, freq_width: int = 6, time_masks: int = 2, time_width: int = 10):
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        b, _, n_mels, n_frames = x.shape
        floor = x.amin(dim=(2, 3), keepdim=True)
        mask = torch.zeros_like(x, dtype=torch.bool)
        for _ in range(self.freq_masks):
            width = torch.randint(0, self.freq_width + 1, (b, 1, 1, 1), device=x.device)
            start = (torch.rand(b, 1, 1, 1, device=x.device) * (n_mels - width).clamp(min=1)).long()
            idx = torch.arange(n_mels, device=x.device).view(1, 1, -1, 1)
            mask |= (idx >= start) & (idx < start + width)
        for _ in range(self.time_masks):
            width = torch.randint(0, self.time_width + 1, (b, 1, 1, 1), device=x.device)
            start = (torch.rand(b, 1, 1, 1, device=x.device) * (n_frames - width).clamp(min=1)).long()
            idx = torch.arange(n_frames, device=x.device).view(1, 1, 1, -1)
            mask |= (idx >= start) & (idx < start + width)
        return torch.where(mask, floor.expand_as(x), x)


def conv_bn_relu(cin: int, cout: int, kernel, stride=1, groups: int = 1) -> nn.Sequential:
    padding = tuple(k // 2 for k in kernel) if isinstance(kernel, tuple) else kernel // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DigitNet(nn.Module):
    """Front end + feature normalisation + a CNN body + linear classifier. Base of teacher and student."""

    def __init__(self, body: nn.Module, channels: int, n_classes: int = 10,
                 frontend: FrontEndConfig = FrontEndConfig(), specaugment: bool = True, dropout: float = 0.1):
        super().__init__()
        self.frontend_cfg = frontend
        self.frontend = LogMelFrontEnd(frontend)
        self.input_norm = nn.BatchNorm2d(1)
        self.specaugment = SpecAugment() if specaugment else nn.Identity()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, n_classes)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        return self.input_norm(self.frontend(audio))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.specaugment(self.features(audio))
        x = self.body(x)
        x = self.pool(x).flatten(1)
        return self.classifier(self.dropout(x))


def build_student(channels: int = 64, blocks: int = 5, downsample_blocks: tuple[int, ...] = (1, 3),
                  **kwargs) -> DigitNet:
    """Depthwise-separable CNN (DS-CNN, as in "Hello Edge"): ~27k parameters at 64 channels x 5 blocks.

    ``downsample_blocks``: which blocks' depthwise convolution has stride 2. The recipe uses (0, 2): the
    blocks then run on a 10x25 and 5x13 grid instead of 20x49 and 10x25, ~2.5x less training time on a
    CPU (depthwise backward passes are slow there) for the same parameters.
    """
    layers: list[nn.Module] = [conv_bn_relu(1, channels, (5, 5), stride=(2, 2))]
    for i in range(blocks):
        stride = (2, 2) if i in downsample_blocks else 1
        layers.append(conv_bn_relu(channels, channels, (3, 3), stride=stride, groups=channels))  # depthwise
        layers.append(conv_bn_relu(channels, channels, (1, 1)))  # pointwise
    return DigitNet(nn.Sequential(*layers), channels, **kwargs)


def build_teacher(width: int = 64, stem_stride: int = 1, **kwargs) -> DigitNet:
    """A plain VGG-style CNN, ~10x the student: accurate, too big and slow for a Pi.

    ``stem_stride=2`` makes the first convolution stride 2 (the recipe's choice): 4x less compute in
    every layer, which on a shared 2-core CPU buys the teacher more epochs than the resolution costs.
    """
    w = width
    body = nn.Sequential(
        conv_bn_relu(1, w, 3, stride=stem_stride), conv_bn_relu(w, w, 3), nn.MaxPool2d(2),
        conv_bn_relu(w, 2 * w, 3), conv_bn_relu(2 * w, 2 * w, 3), nn.MaxPool2d(2),
        conv_bn_relu(2 * w, 4 * w, 3), conv_bn_relu(4 * w, 4 * w, 3), nn.MaxPool2d(2),
        conv_bn_relu(4 * w, 4 * w, 3),
    )
    return DigitNet(body, 4 * w, dropout=0.3, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_nonzero_parameters(model: nn.Module) -> int:
    return int(sum((p != 0).sum().item() for p in model.parameters() if p.requires_grad))
