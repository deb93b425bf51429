"""Where a training step and an inference call spend their time, and how far from the
machine's peak they are.

- :func:`training_breakdown`: ``torch.profiler`` over a few training steps of a model
  recipe (the LightningModule's own objective, backward and optimizer step, in the
  recipe's precision), split into phases: data (layout and dtype), synthesis (synthetic
  anomalies), forward (the rest of the objective), backward, optimizer.
- :func:`inference_breakdown`: the one inference path split into the model's maps and
  scoring (smoothing, reductions, KDE).
- :func:`peak_flops`: the machine's measured peak: a large float32 and bfloat16 matmul.
- :func:`train_flops_per_image`, :func:`inference_flops_per_image`: floating-point
  operations of one training step and of one inference per image
  (``torch.utils.flop_counter``: matmuls and convolutions), so that achieved
  FLOP/s = FLOPs x images/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

PHASES = ("data", "synthesis", "objective", "backward", "optimizer")


def _phase_ms(prof: profile, names: tuple[str, ...], steps: int) -> dict[str, float]:
    totals = {name: 0.0 for name in names}
    for event in prof.key_averages():
        if event.key in totals:
            totals[event.key] += event.cpu_time_total / 1000
    return {name: value / steps for name, value in totals.items()}


def _autocast(precision: str, device: torch.device) -> torch.autocast:
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype,
                          enabled=precision in ("bf16-mixed", "16-mixed"))


def training_step_fn(module: Any, images: Tensor, precision: str,
                     device: torch.device) -> Callable[[], Tensor]:
    """One training step of ``module`` on ``images`` (uint8), phase by phase."""
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], 1e-3)
    generator = torch.Generator().manual_seed(0)
    batch = {"image": images, "label": torch.zeros(len(images)), "path": []}

    def step() -> Tensor:
        with record_function("data"):
            data = {**batch, "image": module._layout(batch["image"].to(device).float() / 255)}
        with _autocast(precision, device), record_function("objective"):
            loss, _ = module.net.training_objective(data, generator)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def training_breakdown(module: Any, images: Tensor, precision: str, device: torch.device,
                       steps: int = 3) -> dict[str, float]:
    """Milliseconds per training step in each phase (forward = objective - synthesis)."""
    module = module.to(device).train()
    step = training_step_fn(module, images, precision, device)
    step()  # warm-up
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - start) / steps
    ms = _phase_ms(prof, PHASES, steps)
    ms["forward"] = ms.pop("objective") - ms["synthesis"]
    ms["step_wall"] = 1000 * wall
    return ms


@torch.no_grad()
def inference_breakdown(module: Any, images: Tensor, calls: int = 3) -> dict[str, float]:
    """Milliseconds per ``predict_batch`` call in the model's maps and in scoring."""
    module = module.eval()
    x = images.float() / 255
    module.predict_batch(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            module.predict_batch(x)
    return _phase_ms(prof, ("anomaly_maps", "scoring"), calls)


def peak_flops(device: torch.device, size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Measured matmul FLOP/s of this machine in float32 and bfloat16 (the best of
    ``repeats``): the ceiling the models' achieved FLOP/s are compared with."""
    peaks = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
        peaks[name] = 2 * size**3 / best
    return peaks


def train_flops_per_image(module: Any, images: Tensor, precision: str,
                          device: torch.device) -> float:
    """FLOPs of one training step (forward, backward), per image."""
    step = training_step_fn(module.to(device).train(), images, precision, device)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / len(images)


@torch.no_grad()
def inference_flops_per_image(module: Any, images: Tensor) -> float:
    """FLOPs of one ``predict_batch`` call, per image."""
    with FlopCounterMode(display=False) as counter:
        module.eval().predict_batch(images.float() / 255)
    return counter.get_total_flops() / len(images)
