"""Quantization-aware fine-tuning of a Q/DQ model's INT8 weights against its FP32 model.

The exported Q/DQ model runs in PyTorch (:class:`~trtq.precision.torch_graph.TorchGraph`, its
Q/DQ pairs as straight-through fake quantization) and its INT8 weights are trained by Adam so that
its outputs match the FP32 model's on the calibration data (distillation: no labels). Unlike the
recoveries before the export (:mod:`trtq.precision.recovery`), which fit each layer alone, this
trains the whole network with every activation already rounded to INT8, so each weight can make up
for the rounding of the layers around it.

What changes, and what does not:

- only the INT8 weight initializers change, each by at most ``bound`` quantization steps from its
  exported value (default 1); scales, zero points, pins, FP16 Casts and every node stay as
  exported, so TensorRT builds the same layers with other weight values;
- each step trains on ``batch`` samples, each cropped at random (``crop`` to 1 of its height and
  width, same aspect, resized back bilinearly) and mirrored left-right with probability 1/2 when
  ``augment`` is on and the input is an image (4-D float, NCHW, at least 16x16); the FP32
  model's outputs on the same crops are the targets; the loss is each output's mean squared error
  relative to the FP32 output's mean square, summed over outputs;
- ``holdout`` of the samples (every k-th) are not trained on: the loss on them, unaugmented, is
  measured before training and ``evaluations`` times during it, and the weights at its lowest are
  kept; when no step lowers it, the model is returned unchanged (``kept`` False). This is the
  rule that keeps the technique only where it helps on data it did not train on.

Needs PyTorch (``pip install "trtq[finetune]"``); runs on CUDA when PyTorch sees a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import onnx

from trtq._core.errors import InputError
from trtq._core.progress import ProgressFn, null_progress

INSTALL_HINT = 'fine-tuning needs PyTorch: pip install "trtq[finetune]" (or any torch >= 2.1)'


@dataclass(frozen=True)
class FinetuneSettings:
    """How to fine-tune. ``lr``: Adam's step in INT8 quantization steps of each weight (0.01: a
    weight can cross one rounding boundary in about 50 steps); ``bound``: how far, in quantization
    steps, a weight may move from its exported INT8 value (0: unbounded); ``crop``: the smallest
    share of the height and width a random crop keeps; ``holdout``: the share of samples held back
    to choose the weights kept (at least one sample; 0: keep the last, and then nothing guards
    against overfitting);
    ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``."""

    steps: int = 200
    lr: float = 0.01
    batch: int = 4
    bound: float = 1.0
    augment: bool = True
    crop: float = 0.5
    holdout: float = 0.25
    evaluations: int = 10
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InputError(f"fine-tuning steps must be >= 1, not {self.steps}")
        if not 0 < self.lr < float("inf"):
            raise InputError(f"fine-tuning learning rate must be a finite number > 0, not {self.lr}")
        if self.batch < 1:
            raise InputError(f"fine-tuning batch must be >= 1, not {self.batch}")
        if not 0 <= self.bound < float("inf"):
            raise InputError(f"fine-tuning bound must be a finite number >= 0, not {self.bound}")
        if not 0 < self.crop <= 1:
            raise InputError(f"fine-tuning crop must be in (0, 1], not {self.crop}")
        if not 0 <= self.holdout < 1:
            raise InputError(f"fine-tuning holdout must be in [0, 1), not {self.holdout}")
        if self.evaluations < 1:
            raise InputError(f"fine-tuning evaluations must be >= 1, not {self.evaluations}")


@dataclass
class FinetuneResult:
    """The fine-tuned model and what the training measured. Losses: the summed relative MSE of the
    outputs against FP32 (module docstring); ``holdout_loss``: ``[step, loss]`` at every evaluation
    on the held-back samples (step 0 = the exported weights)."""

    model: onnx.ModelProto
    kept: bool  # False: no evaluation beat the exported weights; ``model`` is the input unchanged
    best_step: int
    train_samples: int
    holdout_samples: int
    holdout_loss: list[list[float]]
    train_loss: list[list[float]]  # [step, mean loss of the steps since the last evaluation]
    weights: int  # INT8 weight values in the model
    changed: int  # of them, how many the kept model changes (each by at most ``bound`` steps)
    device: str
    seconds: float
    settings: FinetuneSettings

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the model."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        return {**out, "seconds": round(self.seconds, 3), "settings": asdict(self.settings)}


def split_samples(batches: Iterable[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The batches as single samples (batch dimension 1), in order."""
    out = []
    for batch in batches:
        count = len(next(iter(batch.values())))
        out.extend({k: v[i : i + 1] for k, v in batch.items()} for i in range(count))
    return out


def holdout_indices(count: int, share: float) -> list[int]:
    """The positions held back: every k-th sample (k = round(1 / share)), from the last of the
    first k, so that they spread over the data; none when ``share`` is 0 or fewer than 2 samples."""
    if share <= 0 or count < 2:
        return []
    k = max(2, round(1 / share))
    return list(range(k - 1, count, k)) or [count - 1]


def require_holdout(count: int, settings: FinetuneSettings, source: str = "fine-tuning") -> list[int]:
    """:func:`holdout_indices` for ``count`` samples; :class:`InputError` (its text starting with
    ``source``) when the settings hold samples back and ``count`` is too few to spare one."""
    held = holdout_indices(count, settings.holdout)
    if settings.holdout > 0 and not held:
        raise InputError(
            f"{source}: too few samples to hold any back to decide whether to keep the tuned weights: "
            f"{count} sample(s) (give at least 2)"
        )
    return held


def finetune(
    reference: onnx.ModelProto,
    qdq: onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    settings: FinetuneSettings | None = None,
    *,
    progress: ProgressFn = null_progress,
) -> FinetuneResult:
    """Fine-tune ``qdq``'s INT8 weights to ``reference`` (the FP32 model it was exported from) on
    ``batches`` (the calibration data: dicts of input name -> array, batch dimension first).
    ``progress`` is announced with ``settings.steps`` units and advanced once per step."""
    try:
        import torch
    except ImportError as exc:
        raise InputError(INSTALL_HINT) from exc
    from trtq.precision.torch_graph import TorchGraph

    settings = settings or FinetuneSettings()
    t0 = time.perf_counter()
    samples = split_samples(batches)
    if not samples:
        raise InputError("fine-tuning: no samples in the data")
    ref_outputs = [o.name for o in reference.graph.output]
    if ref_outputs != [o.name for o in qdq.graph.output]:
        raise InputError("fine-tuning: the Q/DQ model's outputs are not the FP32 model's (by name and order)")
    held = require_holdout(len(samples), settings)
    train = [s for i, s in enumerate(samples) if i not in set(held)]  # never empty: at most half held

    device = _device(torch, settings.device)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    student = TorchGraph(qdq).to(device)
    if not student.weight_names:
        raise InputError(
            "fine-tuning: the Q/DQ model has no INT8 weight initializers (DequantizeLinear of an int8 "
            "tensor); export it with trtq's precision export or quantize"
        )
    teacher = TorchGraph(reference).to(device)
    teacher.requires_grad_(False)
    start = {n: p.detach().clone() for n, p in student.latents.items()}
    train = [_to_device(torch, s, device) for s in train]

    def loss_of(inputs: dict[str, Any], targets: list[Any]) -> Any:
        outs = student(inputs)
        total = 0.0
        for o, t in zip(outs, targets, strict=True):
            total = total + torch.mean((o - t) ** 2) / (torch.mean(t * t) + 1e-12)
        return total

    held_inputs = [_to_device(torch, samples[i], device) for i in held]
    with torch.no_grad():
        held_targets = [teacher(x) for x in held_inputs]

    def holdout_loss() -> float:
        if not held_inputs:
            return float("nan")
        with torch.no_grad():
            return float(
                np.mean([float(loss_of(x, t)) for x, t in zip(held_inputs, held_targets, strict=True)])
            )

    params = list(student.latents.values())
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    every = max(1, settings.steps // settings.evaluations)
    history = [[0, holdout_loss()]]
    train_history: list[list[float]] = []
    best_loss, best_step, best = history[0][1], 0, start
    progress(0, total=settings.steps, description="fine-tuning the INT8 weights")
    running: list[float] = []
    for step in range(1, settings.steps + 1):
        picks = rng.choice(len(train), size=min(settings.batch, len(train)), replace=False)
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            chosen = [_augment(torch, train[i], rng, settings) for i in picks]
        for inputs in _stacked(torch, chosen):  # samples of different shapes run apart, gradients summed
            share = len(next(iter(inputs.values()))) / len(chosen)
            with torch.no_grad():
                targets = teacher(inputs)
            loss = loss_of(inputs, targets)
            (loss * share).backward()
            running.append(float(loss.detach()))
        optimizer.step()
        if settings.bound:
            with torch.no_grad():
                for n, p in student.latents.items():
                    p.copy_(torch.clamp(p, start[n] - settings.bound, start[n] + settings.bound))
        progress(1)
        if step % every == 0 or step == settings.steps:
            train_history.append([step, float(np.mean(running))])
            running = []
            if held_inputs:
                value = holdout_loss()
                history.append([step, value])
                if value < best_loss:
                    best_loss, best_step = value, step
                    best = {n: p.detach().clone() for n, p in student.latents.items()}
    if not held_inputs:  # nothing to choose by: the last weights
        best_step = settings.steps
        best = {n: p.detach().clone() for n, p in student.latents.items()}
    with torch.no_grad():
        for n, p in student.latents.items():
            p.copy_(best[n])
    rounded = student.rounded_weights()
    original = {t.name: onnx.numpy_helper.to_array(t) for t in qdq.graph.initializer if t.name in rounded}
    changed = sum(int((rounded[n] != original[n]).sum()) for n in rounded)
    kept = best_step > 0 and changed > 0
    model = student.to_onnx() if kept else qdq
    return FinetuneResult(
        model=model,
        kept=kept,
        best_step=best_step if kept else 0,
        train_samples=len(train),
        holdout_samples=len(held),
        holdout_loss=history,
        train_loss=train_history,
        weights=sum(int(v.size) for v in rounded.values()),
        changed=changed if kept else 0,
        device=str(device),
        seconds=time.perf_counter() - t0,
        settings=settings,
    )


def _device(torch: Any, name: str) -> Any:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown fine-tuning device '{name}' (auto, cpu or cuda[:N])") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"fine-tuning device '{name}': PyTorch sees no CUDA GPU here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"fine-tuning device '{name}': PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"fine-tuning device '{name}': use auto, cpu or cuda[:N]")
    return device


def _to_device(torch: Any, sample: Mapping[str, np.ndarray], device: Any) -> dict[str, Any]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in sample.items()}


def _stacked(torch: Any, samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The samples (torch tensors, batch dimension 1) concatenated into one batch per set of
    input shapes (a batch needs one shape per input)."""
    groups: dict[tuple, list] = {}
    for s in samples:
        groups.setdefault(tuple((k, tuple(v.shape), v.dtype) for k, v in s.items()), []).append(s)
    return [{k: torch.cat([s[k] for s in group]) for k in group[0]} for group in groups.values()]


def _augment(
    torch: Any, sample: dict[str, Any], rng: np.random.Generator, settings: FinetuneSettings
) -> dict[str, Any]:
    """A random crop (resized back) and mirror of the sample's image inputs (torch tensors
    [1, C, H, W]), the same for each; other inputs as they are."""
    images = [k for k, v in sample.items() if _is_image(v)]
    if not settings.augment or not images:
        return sample
    share = rng.uniform(settings.crop, 1.0)
    flip = bool(rng.random() < 0.5)
    fy, fx = rng.random(), rng.random()
    out = dict(sample)
    for k in images:
        out[k] = _crop_resize(torch, sample[k], share, fy, fx, flip)
    return out


def _is_image(v: Any) -> bool:
    """NCHW float with 1-4 channels and at least 16x16 pixels (not, say, a 4-D attention mask)."""
    return (
        v.ndim == 4
        and v.dtype.is_floating_point
        and v.shape[1] <= 4
        and v.shape[2] >= 16
        and v.shape[3] >= 16
    )


def _crop_resize(torch: Any, x: Any, share: float, fy: float, fx: float, flip: bool) -> Any:
    """``x`` [1, C, H, W]: the crop of ``share`` of H and W at relative offset (fy, fx), resized back
    to H x W (bilinear, pixel centres aligned, no antialiasing: OpenCV's INTER_LINEAR), mirrored
    left-right when ``flip``."""
    import torch.nn.functional as F

    _, _, h, w = x.shape
    ch, cw = max(1, round(h * share)), max(1, round(w * share))
    y0, x0 = int(fy * (h - ch)), int(fx * (w - cw))
    out = F.interpolate(
        x[:, :, y0 : y0 + ch, x0 : x0 + cw], size=(h, w), mode="bilinear", align_corners=False
    )
    return torch.flip(out, dims=[3]) if flip else out
