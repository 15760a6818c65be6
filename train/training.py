"""The three training loops: teacher (``fit``), distilled student (``distill``), pruned student (``prune``).

All three draw freshly augmented batches every epoch and stop early on a validation score that mixes
clean and corrupted copies of the validation takes, so "best" means robust, not just memorised.
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

from digitspot.train.augment import AugmentConfig, augment_batch, augment_batch_pair, clean_batch
from digitspot.train.data import ClipSet
from digitspot.train.model import (
    DigitNet,
    build_student,
    build_teacher,
    count_nonzero_parameters,
    count_parameters,
)

WINDOW = 8000


@dataclass
class LoopConfig:
    """One training loop. ``max_minutes`` caps wall time on a busy machine (recorded in the result)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-3
    patience: int = 6
    max_minutes: float = 10.0
    label_smoothing: float = 0.05
    seed: int = 0
    max_batches_per_epoch: int = 0  # 0 = whole training set (``--quick`` caps it)
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights
    # Epochs without a validation gain count towards ``patience`` only once this fraction of the schedule
    # (epochs or time budget) has run. Before that the cosine learning rate is still high and a plateau is
    # not convergence: a 55-epoch teacher stopped at epoch 33 tests 99.0% against 100% when it runs all 55,
    # and counting from half-way lets a student stop with its learning rate still at a quarter of the peak.
    early_stop_from: float = 0.75
    # With a teacher: it scores each training window before the noise was added, not the noisy window the
    # student sees (at -3..5 dB SNR the teacher itself is often wrong, and its mistakes become targets).
    teacher_noise_free: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DistillConfig(LoopConfig):
    alpha: float = 0.7  # weight of the soft-target (KL) term
    temperature: float = 4.0


@dataclass
class PruneConfig(LoopConfig):
    target_sparsity: float = 0.4
    steps: int = 8
    epochs_per_step: int = 1
    lr: float = 1e-3
    alpha: float = 0.7
    temperature: float = 4.0
    # Each step's fine-tune keeps a weight average too. The distilled student is itself an average, and
    # a step of raw fine-tuning iterates costs it validation accuracy even at 5% sparsity, where pruning
    # alone changes nothing (validation score, clean and corrupted: 97.5% with the average, 96.8% without,
    # 96.7% without at a 10x lower learning rate, so it is not the step size).
    ema_decay: float = 0.99
    final_epochs: int = 0  # after the last step: fine-tune at the final sparsity, cosine-decayed, weight-averaged
    final_ema_decay: float = 0.99  # that fine-tune's weight average (3 short epochs: a short memory)


@dataclass
class TrainHistory:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = 0.0
    stopped: str = ""
    seconds: float = 0.0


def build_model(arch: dict) -> DigitNet:
    kind, kwargs = arch["kind"], dict(arch.get("kwargs", {}))
    if kind == "teacher":
        return build_teacher(**kwargs)
    if kind == "student":
        return build_student(**kwargs)
    raise ValueError(f"unknown architecture {kind!r}")


def save_checkpoint(path, model: nn.Module, arch: dict, extra: dict) -> None:
    import io

    from digitspot.edge.atomic_write import write_bytes_atomic

    buf = io.BytesIO()
    torch.save({"arch": arch, "state_dict": model.state_dict(), **extra}, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_checkpoint(path) -> tuple[DigitNet, dict]:
    from digitspot.edge.errors import MissingInputError

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError as exc:
        raise MissingInputError(f"checkpoint {path} not found: run the previous stage first") from exc
    model = build_model(ckpt["arch"])
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt


class ValidationSet:
    """Clean validation windows plus a fixed, seeded corrupted copy of each (pitch, noise, reverb)."""

    def __init__(self, clips: ClipSet, aug: AugmentConfig, seed: int = 99):
        rng = np.random.default_rng(seed)
        self.clean = torch.from_numpy(clean_batch(clips.clips, WINDOW))
        hard = AugmentConfig(**{**aug.to_dict(), "p_noise": 1.0, "p_speed": 1.0, "cents_min": 0.0,
                                "snr_db_min": 0.0, "snr_db_max": 15.0, "p_centre": 1.0})
        self.hard = torch.from_numpy(augment_batch(clips.clips, WINDOW, rng, hard))
        self.labels = torch.from_numpy(clips.label_array())

    @torch.no_grad()
    def score(self, model: nn.Module) -> dict:
        model.eval()
        acc = {}
        for name, x in (("clean", self.clean), ("hard", self.hard)):
            preds = torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])
            acc[name] = float((preds == self.labels).float().mean())
        acc["score"] = 0.5 * (acc["clean"] + acc["hard"])
        return acc


def _epoch_batches(n: int, batch: int, rng: np.random.Generator, cap: int) -> list[np.ndarray]:
    order = rng.permutation(n)
    batches = [order[i:i + batch] for i in range(0, n - batch + 1, batch)] or [order]
    return batches[:cap] if cap else batches


def kd_loss(student_logits, teacher_logits, labels, alpha: float, temperature: float, smoothing: float = 0.0):
    """alpha * KL(teacher_T || student_T) * T^2 + (1 - alpha) * CE(student, labels)  (Hinton et al.)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                    reduction="batchmean") * (t * t)
    hard = F.cross_entropy(student_logits, labels, label_smoothing=smoothing)
    return alpha * soft + (1 - alpha) * hard


def set_lr(opt: torch.optim.Optimizer, peak: float, step_fraction: float, time_fraction: float,
           warmup: float = 0.1) -> float:
    """Warm-up then cosine decay over whichever runs out first, the epochs or the time budget, so a
    run cut short by ``max_minutes`` on a busy machine still ends with a low learning rate."""
    progress = min(1.0, max(step_fraction, time_fraction))
    if progress < warmup:
        lr = peak * (0.1 + 0.9 * progress / warmup)
    else:
        lr = peak * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * (progress - warmup) / (1 - warmup))))
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


class WeightAverage:
    """Exponential moving average of a model's weights and BatchNorm statistics.

    Why: with heavy augmentation and a high learning rate the weights of a small network wander from
    batch to batch; their running average is a smoother, usually more accurate model for free, and
    its validation score is steadier, so picking "the best epoch" picks less noise. The decay ramps up
    from 0.18 at the first step (``(1 + step) / (10 + step)``) so early epochs are not dominated by random init."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model)
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        current = model.state_dict()
        for name, avg in self.model.state_dict().items():
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(current[name], alpha=1 - d)
            else:
                avg.copy_(current[name])


def train_loop(model: DigitNet, train: ClipSet, val: ValidationSet, cfg: LoopConfig, aug: AugmentConfig,
               teacher: DigitNet | None = None, desc: str = "train", progress: bool = True,
               epochs: int | None = None, early_stop: bool = True) -> TrainHistory:
    """Train ``model`` in place (keeping the best-on-validation weights) and return the history."""
    from tqdm import tqdm

    epochs = cfg.epochs if epochs is None else epochs
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = len(_epoch_batches(len(train), cfg.batch_size, rng, cfg.max_batches_per_epoch))
    total_steps = max(1, epochs * n_batches)
    step = 0
    if epochs > 1:
        set_lr(opt, cfg.lr, 0.0, 0.0)
    labels_all = train.label_array()
    hist = TrainHistory()
    best_state = copy.deepcopy(model.state_dict())
    start = time.monotonic()
    bad_epochs = 0
    if teacher is not None:
        teacher.eval()
        teacher.to(memory_format=torch.channels_last)
    # channels-last while training: oneDNN's CPU convolutions (the depthwise backward above all) run a
    # student step ~1.25x faster that way (133 vs 167 ms, batch 64, one thread). The weights go
    # back to the default layout before returning, so checkpoints and the exporter see ordinary tensors.
    model.to(memory_format=torch.channels_last)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

    def budget_fraction() -> float:
        """How much of the time budget has gone (the schedule ends with whichever runs out first)."""
        return (time.monotonic() - start) / (60 * cfg.max_minutes)

    for epoch in range(epochs):
        model.train()
        total, seen = 0.0, 0
        batches = _epoch_batches(len(train), cfg.batch_size, rng, cfg.max_batches_per_epoch)
        for idx in tqdm(batches, desc=f"{desc} epoch {epoch + 1}/{epochs}", disable=not progress, leave=False):
            batch_clips = [train.clips[i] for i in idx]
            if teacher is not None and cfg.teacher_noise_free:
                x, x_teacher = (torch.from_numpy(a) for a in augment_batch_pair(batch_clips, WINDOW, rng, aug))
            else:
                x = x_teacher = torch.from_numpy(augment_batch(batch_clips, WINDOW, rng, aug))
            y = torch.from_numpy(labels_all[idx])
            logits = model(x)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x_teacher)
                loss = kd_loss(logits, t_logits, y, cfg.alpha, cfg.temperature, cfg.label_smoothing)
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                average.update(model)
            step += 1
            if epochs > 1:
                set_lr(opt, cfg.lr, step / total_steps, budget_fraction())
            total += loss.item() * len(idx)
            seen += len(idx)
        scored = average.model if average is not None else model
        v = val.score(scored)
        record = {"epoch": epoch + 1, "loss": total / max(1, seen), **{f"val_{k}": v[k] for k in v},
                  "seconds": round(time.monotonic() - start, 1)}
        hist.epochs.append(record)
        tqdm.write(f"{desc} epoch {epoch + 1}: loss {record['loss']:.3f} val clean {v['clean']:.3f} "
                       f"hard {v['hard']:.3f} ({record['seconds']:.0f} s)", file=sys.stderr)
        if v["score"] >= hist.best_score:
            hist.best_score, hist.best_epoch = v["score"], epoch + 1
            best_state = copy.deepcopy(scored.state_dict())
            bad_epochs = 0
        elif max(step / total_steps, budget_fraction()) >= cfg.early_stop_from:
            bad_epochs += 1
        if early_stop and bad_epochs >= cfg.patience:
            hist.stopped = f"early stop: no validation gain for {cfg.patience} epochs"
            break
        if budget_fraction() > 1.0:
            hist.stopped = f"time budget of {cfg.max_minutes} min reached"
            break
    hist.stopped = hist.stopped or "epoch limit"
    hist.seconds = round(time.monotonic() - start, 1)
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)
    if teacher is not None:
        teacher.to(memory_format=torch.contiguous_format)
    return hist


# --- pruning -------------------------------------------------------------------------------------

def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Weights of every convolution and linear layer (the front end has no trainable weights)."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def sparsity(model: nn.Module) -> float:
    params = [getattr(m, n) for m, n in prunable(model)]
    total = sum(p.numel() for p in params)
    zeros = sum(int((p == 0).sum()) for p in params)
    return zeros / max(1, total)


def prune_iteratively(model: DigitNet, teacher: DigitNet | None, train: ClipSet, val: ValidationSet,
                      cfg: PruneConfig, aug: AugmentConfig, progress: bool = True) -> list[dict]:
    """Global magnitude pruning in ``cfg.steps`` equal steps to ``cfg.target_sparsity``, fine-tuning after
    each step (with distillation from the teacher), then masks are made permanent (``prune.remove``).

    Each step's fine-tune runs at a constant learning rate, so the last step leaves the weights where
    one noisy batch put them; ``cfg.final_epochs`` adds a recovery fine-tune at the final sparsity with
    a decaying learning rate and the weight average (masks stay fixed, so pruned weights stay zero)."""
    params = prunable(model)
    log = []
    previous = 0.0
    for step in range(1, cfg.steps + 1):
        target = cfg.target_sparsity * step / cfg.steps
        # torch applies `amount` to the weights still unpruned, so convert the cumulative target.
        amount = (target - previous) / (1.0 - previous)
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
        previous = target
        before = val.score(model)
        step_cfg = PruneConfig(**{**cfg.to_dict(), "seed": cfg.seed + step})
        hist = train_loop(model, train, val, step_cfg, aug, teacher=teacher, desc=f"prune step {step}/{cfg.steps}",
                          progress=progress, epochs=cfg.epochs_per_step, early_stop=False)
        log.append({"step": step, "sparsity_target": round(target, 4), "sparsity": round(sparsity(model), 4),
                    "val_before_finetune": before, "val_after_finetune": hist.epochs[-1] if hist.epochs else {},
                    "seconds": hist.seconds})
    if cfg.final_epochs > 0:
        final_cfg = PruneConfig(**{**cfg.to_dict(), "seed": cfg.seed + cfg.steps + 1,
                                   "ema_decay": cfg.final_ema_decay})
        before = val.score(model)
        hist = train_loop(model, train, val, final_cfg, aug, teacher=teacher, desc="prune recovery",
                          progress=progress, epochs=cfg.final_epochs, early_stop=False)
        log.append({"step": "recovery", "sparsity_target": cfg.target_sparsity, "sparsity": round(sparsity(model), 4),
                    "val_before_finetune": before, "val_after_finetune": val.score(model),
                    "best_epoch": hist.best_epoch, "epochs": cfg.final_epochs, "seconds": hist.seconds})
    for module, name in params:
        torch_prune.remove(module, name)
    return log


def model_summary(model: nn.Module) -> dict:
    return {"parameters": count_parameters(model), "nonzero_parameters": count_nonzero_parameters(model),
            "weight_sparsity": round(sparsity(model), 4)}
