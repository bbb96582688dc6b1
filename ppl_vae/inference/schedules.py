"""KL-weight schedules (provisional; replaced by the schedules module of the KL-schedule work)."""

from __future__ import annotations

import torch


def kl_weight(step, warmup_steps, cycle_steps, cycle_ratio) -> torch.Tensor:
    """Weight in (0, 1] of a latent site's KL at 0-based ``step``; per-configuration tensors broadcast."""
    step = torch.as_tensor(step, dtype=torch.float32)
    warmup = torch.as_tensor(warmup_steps, dtype=torch.float32)
    cycle = torch.as_tensor(cycle_steps, dtype=torch.float32)
    ratio = torch.as_tensor(cycle_ratio, dtype=torch.float32)
    cyclical = cycle > 0
    tau = torch.where(cyclical, torch.remainder(step, cycle.clamp(min=1)), step)
    ramp = torch.where(cyclical, ratio * cycle, warmup)
    weight = torch.clamp((tau + 1) / ramp.clamp(min=1e-12), max=1.0)
    return torch.where(ramp > 0, weight, torch.ones_like(weight))
