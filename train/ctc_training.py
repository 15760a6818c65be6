"""Training the streaming CTC model: teacher (CTC), distilled student, iterative magnitude pruning.

Losses. The teacher learns CTC alone. The student learns
``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CTC(student)`` with ``T = 4``, ``alpha = 0.7``,
the KL taken frame by frame over the frames that carry a target (see ``digitspot.train.ctc_scenes``):
teacher and student share the frame rate and the right context, so the teacher's spikes are where the
student can put them. Pruning removes 40% of the convolution weights by global magnitude in 8 equal
steps, with a distilled fine-tune after each.

Every batch is drawn fresh (new scenes, new crops, new augmentation), so a run has no epochs: the loops
count steps, stop at a step limit or a wall-time budget, and keep the weights that decode the fixed
validation scenes (made from FSDD's validation takes, never test takes) best.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from digitspot.train.ctc_scenes import (
    SceneConfig,
    SceneMaker,
    SegmentPool,
    add_noise,
    make_batch,
)
from digitspot.train.frame_model import BLANK, FrameNet
from digitspot.train.stream_decode_reference import greedy_decode
from digitspot.train.training import WeightAverage, set_lr


@dataclass
class CtcLoopConfig:
    """One training loop. The schedule (warm-up, cosine) runs over whichever ends first, steps or time."""

    max_steps: int = 2000
    max_minutes: float = 10.0
    batch_size: int = 24
    lr: float = 3e-3
    weight_decay: float = 1e-3
    ema_decay: float = 0.995
    validate_every: int = 100  # steps
    validate_every_minutes: float = 0.0  # > 0: also validate when this much time has passed since the last time
    seed: int = 0
    alpha: float = 0.7  # weight of the distillation term (student loops only)
    temperature: float = 4.0
    teacher_noise_free: bool = True  # the teacher scores the window before the noise bed was added
    constant_lr: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CtcPruneConfig:
    target_sparsity: float = 0.4
    steps: int = 8
    steps_per_stage: int = 60  # fine-tune batches after each pruning step
    recovery_steps: int = 120  # after the last step, at the final sparsity, decaying learning rate
    lr: float = 1e-3
    batch_size: int = 24
    alpha: float = 0.7
    temperature: float = 4.0
    seed: int = 100

    def to_dict(self) -> dict:
        return asdict(self)


# --- losses ----------------------------------------------------------------------------------------------

def _window_frames(values: torch.Tensor, frame_lo: torch.Tensor, length: int) -> torch.Tensor:
    """``values`` [B, T, C] -> [B, length, C], row b starting at frame ``frame_lo[b]`` (clamped at the end)."""
    b, t, c = values.shape
    idx = (frame_lo.view(-1, 1) + torch.arange(length).view(1, -1)).clamp(max=t - 1)
    return values.gather(1, idx.unsqueeze(-1).expand(b, length, c))


def ctc_loss(logits: torch.Tensor, targets: list[list[int]], frame_lo: np.ndarray, frame_hi: np.ndarray) -> torch.Tensor:
    """CTC (blank 0) over each example's target frames, mean over examples of loss / target length.
    Examples without target frames are skipped."""
    keep = [i for i in range(len(targets)) if frame_hi[i] > frame_lo[i]]
    if not keep:
        return logits.sum() * 0.0
    lo = torch.as_tensor(frame_lo[keep])
    lengths = torch.as_tensor(frame_hi[keep] - frame_lo[keep])
    logp = F.log_softmax(logits[keep].float(), dim=-1)
    window = _window_frames(logp, lo, int(lengths.max()))
    flat = torch.as_tensor([t for i in keep for t in targets[i]], dtype=torch.long)
    target_lengths = torch.as_tensor([len(targets[i]) for i in keep])
    return F.ctc_loss(window.transpose(0, 1), flat, lengths, target_lengths, blank=BLANK, reduction="mean",
                      zero_infinity=True)


def target_mask(shape: tuple[int, int], frame_lo: np.ndarray, frame_hi: np.ndarray) -> torch.Tensor:
    idx = torch.arange(shape[1]).view(1, -1)
    return (idx >= torch.as_tensor(frame_lo).view(-1, 1)) & (idx < torch.as_tensor(frame_hi).view(-1, 1))


def frame_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """T^2 x mean over masked frames of KL(teacher_T || student_T) (summed over labels)."""
    t = temperature
    log_s = F.log_softmax(student_logits / t, dim=-1)
    log_t = F.log_softmax(teacher_logits / t, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1.0) * (t * t)


def distill_loss(student_logits, teacher_logits, targets, frame_lo, frame_hi, alpha: float, temperature: float):
    mask = target_mask(student_logits.shape[:2], frame_lo, frame_hi)
    kd = frame_kd_loss(student_logits, teacher_logits, mask, temperature)
    return alpha * kd + (1 - alpha) * ctc_loss(student_logits, targets, frame_lo, frame_hi)


# --- validation --------------------------------------------------------------------------------------------

@dataclass
class ValidationItem:
    audio: np.ndarray
    digits: list[int]
    kind: str
    n_frames: int


class CtcValidation:
    """Fixed, seeded scenes from the validation takes: single digits, strings (0-250 ms gaps), non-digit
    sounds, noise alone; half of them with a noise bed at 5-20 dB. Score: exact digit strings, decoded
    greedily (the daemon's rule) over the whole scene."""

    def __init__(self, pool: SegmentPool, cfg: SceneConfig, model_geometry: FrameNet, seed: int = 991,
                 counts: dict | None = None):
        rng = np.random.default_rng(seed)
        counts = counts or {"single": 100, "string": 100, "filler": 30, "empty": 10,
                            **({"phrase": 40} if pool.phrases else {})}
        maker = SceneMaker(pool, cfg)
        self.items: list[ValidationItem] = []
        for kind, count in counts.items():
            for i in range(count):
                scene = maker.make(rng, kind=kind, gap_s=(0.0, 0.25), augment=i % 2 == 1)
                noisy, _ = add_noise(scene.speech, scene.level, rng, cfg, pool, force_noise=i % 2 == 1,
                                         snr_db=(5.0, 20.0))
                digits = [lab - 1 for p in scene.segments for lab in p.labels if 1 <= lab <= 10]
                self.items.append(ValidationItem(noisy, digits, kind, model_geometry.n_frames(len(noisy))))
        # one batch per length bucket (0.5 s): padding repeats the scene's own end, frames past the scene are ignored
        self.buckets: dict[int, list[int]] = {}
        for i, item in enumerate(self.items):
            self.buckets.setdefault(-(-len(item.audio) // 4000) * 4000, []).append(i)

    @torch.no_grad()
    def score(self, model: nn.Module) -> dict:
        model.eval()
        decoded: dict[int, list[int]] = {}
        for length, idx in self.buckets.items():
            x = np.zeros((len(idx), length), np.float32)
            for row, i in enumerate(idx):
                a = self.items[i].audio
                x[row, : len(a)] = a
            for start in range(0, len(idx), 64):
                logits = model(torch.from_numpy(x[start:start + 64])).numpy()
                for row, i in enumerate(idx[start:start + 64]):
                    post = np.exp(logits[row] - logits[row].max(-1, keepdims=True))
                    post /= post.sum(-1, keepdims=True)
                    decoded[i] = greedy_decode(post[: self.items[i].n_frames], 0.0)
        by_kind: dict[str, list[bool]] = {}
        for i, item in enumerate(self.items):
            by_kind.setdefault(item.kind, []).append(decoded[i] == item.digits)
        out = {f"exact_{k}": float(np.mean(v)) for k, v in by_kind.items()}
        out["score"] = float(np.mean([ok for v in by_kind.values() for ok in v]))
        return out


# --- loops ----------------------------------------------------------------------------------------------------

@dataclass
class LoopHistory:
    records: list[dict] = field(default_factory=list)
    best_step: int = 0
    best_score: float = -1.0
    steps: int = 0
    seconds: float = 0.0
    stopped: str = ""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_ctc(model: FrameNet, maker: SceneMaker, val: CtcValidation, cfg: CtcLoopConfig, desc: str,
              teacher: FrameNet | None = None) -> LoopHistory:
    """Train ``model`` in place and leave it holding the best-on-validation weights (of the weight average)."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    geometry = model.geometry()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    if teacher is not None:
        teacher.eval()
    hist = LoopHistory()
    best_state = copy.deepcopy(model.state_dict())
    start = time.monotonic()
    running, n_running = 0.0, 0
    last_validation = start

    def progress() -> float:
        return max(hist.steps / cfg.max_steps, (time.monotonic() - start) / (60 * cfg.max_minutes))

    while True:
        model.train()
        if not cfg.constant_lr:
            set_lr(opt, cfg.lr, hist.steps / cfg.max_steps, (time.monotonic() - start) / (60 * cfg.max_minutes))
        batch = make_batch(maker, cfg.batch_size, rng, geometry, model.n_frames)
        x = torch.from_numpy(batch.audio)
        logits = model(x)
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(torch.from_numpy(batch.clean) if cfg.teacher_noise_free else x)
            loss = distill_loss(logits, t_logits, batch.targets, batch.frame_lo, batch.frame_hi, cfg.alpha,
                                cfg.temperature)
        else:
            loss = ctc_loss(logits, batch.targets, batch.frame_lo, batch.frame_hi)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if average is not None:
            average.update(model)
        hist.steps += 1
        running += loss.item()
        n_running += 1
        done = progress() >= 1.0
        due = cfg.validate_every_minutes > 0 and time.monotonic() - last_validation > 60 * cfg.validate_every_minutes
        if hist.steps % cfg.validate_every == 0 or done or due:
            last_validation = time.monotonic()
            scored = average.model if average is not None else model
            v = val.score(scored)
            record = {"step": hist.steps, "loss": round(running / max(1, n_running), 4),
                      "seconds": round(time.monotonic() - start, 1), **{k: round(x, 4) for k, x in v.items()}}
            hist.records.append(record)
            log(f"{desc} step {hist.steps}: loss {record['loss']:.3f} val {v['score']:.3f} "
                f"({', '.join(f'{k[6:]} {x:.2f}' for k, x in v.items() if k.startswith('exact_'))}) "
                f"{record['seconds']:.0f} s")
            running, n_running = 0.0, 0
            if v["score"] >= hist.best_score:
                hist.best_score, hist.best_step = v["score"], hist.steps
                best_state = copy.deepcopy(scored.state_dict())
        if done:
            hist.stopped = "step limit" if hist.steps >= cfg.max_steps else f"time budget of {cfg.max_minutes} min"
            break
    hist.seconds = round(time.monotonic() - start, 1)
    model.load_state_dict(best_state)
    return hist


# --- pruning ------------------------------------------------------------------------------------------------

def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every convolution's weights (the front end has none)."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]


def sparsity(model: nn.Module) -> float:
    params = [getattr(m, n) for m, n in prunable(model)]
    return sum(int((p == 0).sum()) for p in params) / max(1, sum(p.numel() for p in params))


def prune_ctc(model: FrameNet, teacher: FrameNet, maker: SceneMaker, val: CtcValidation,
              cfg: CtcPruneConfig) -> list[dict]:
    """Global L1 magnitude pruning to ``target_sparsity`` in ``steps`` equal steps, a distilled fine-tune
    after each at a constant learning rate, then a recovery fine-tune with a decaying one; the masks are
    then made permanent."""
    params = prunable(model)
    records, previous = [], 0.0
    for step in range(1, cfg.steps + 1):
        target = cfg.target_sparsity * step / cfg.steps
        amount = (target - previous) / (1.0 - previous)  # torch prunes a fraction of what is left
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
        previous = target
        before = val.score(model)["score"]
        loop = CtcLoopConfig(max_steps=cfg.steps_per_stage, max_minutes=1e9, batch_size=cfg.batch_size, lr=cfg.lr,
                             ema_decay=0.0, validate_every=cfg.steps_per_stage, seed=cfg.seed + step,
                             alpha=cfg.alpha, temperature=cfg.temperature, constant_lr=True)
        hist = train_ctc(model, maker, val, loop, f"prune {step}/{cfg.steps}", teacher=teacher)
        records.append({"step": step, "sparsity": round(sparsity(model), 4), "val_before": round(before, 4),
                        "val_after": round(hist.records[-1]["score"], 4), "seconds": hist.seconds})
    if cfg.recovery_steps:
        loop = CtcLoopConfig(max_steps=cfg.recovery_steps, max_minutes=1e9, batch_size=cfg.batch_size, lr=cfg.lr,
                             ema_decay=0.0, validate_every=max(1, cfg.recovery_steps // 2),
                             seed=cfg.seed + cfg.steps + 1, alpha=cfg.alpha, temperature=cfg.temperature)
        hist = train_ctc(model, maker, val, loop, "prune recovery", teacher=teacher)
        records.append({"step": "recovery", "sparsity": round(sparsity(model), 4),
                        "val_after": round(hist.best_score, 4), "seconds": hist.seconds})
    for module, name in params:
        torch_prune.remove(module, name)
    return records


# --- checkpoints --------------------------------------------------------------------------------------------

def save_frame_checkpoint(path, model: FrameNet, extra: dict) -> None:
    import io

    from digitspot.edge.atomic_write import write_bytes_atomic

    buf = io.BytesIO()
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), **extra}, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_frame_checkpoint(path) -> tuple[FrameNet, dict]:
    from digitspot.train.frame_model import FrameModelConfig

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = FrameNet(FrameModelConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def calibration_windows(maker: SceneMaker, count: int, window: int, seed: int = 7) -> np.ndarray:
    """Serving-length windows of training scenes (lightly noised) for INT8 calibration."""
    rng = np.random.default_rng(seed)
    out = []
    cfg = maker.cfg
    while len(out) < count:
        scene = maker.make(rng)
        n = len(scene.speech)
        offset = int(rng.integers(-window // 2, max(-window // 2 + 1, n - window // 2)))
        seg = np.zeros(window, np.float32)
        lo, hi = max(0, offset), min(n, offset + window)
        if hi > lo:
            seg[lo - offset:hi - offset] = scene.speech[lo:hi]
        noisy, _ = add_noise(seg, scene.level, rng, cfg, maker.pool)
        out.append(noisy)
    return np.stack(out)

