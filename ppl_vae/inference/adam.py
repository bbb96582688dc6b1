"""Adam by torch's fused kernel, without ``torch.optim``'s wrapper (which imports ``torch._dynamo``).

``torch.optim.Optimizer`` wraps ``add_param_group`` and ``step`` so that
``torch.compile`` never traces into them, and that wrapper imports
``torch._dynamo`` the first time either runs (about 1.3 s on the development
CPU, sympy included), whatever optimiser or flags are chosen. A sweep of one
epoch trains for less than that. :class:`FusedAdam` makes the update
``torch.optim.Adam(params, lr=lr, fused=True)`` makes, by the same kernel
(``torch._fused_adam_``) on the same tensors with the same arguments, so the
parameters are bit for bit torch's (tests/inference/test_inference_adam.py
holds the two side by side), and its ``state_dict`` has torch's layout, so a
checkpoint written by either resumes in either.

Only what the trainer uses is offered: one or more parameter groups of float
tensors on one CPU or CUDA device each, ``lr`` settable per group between
steps, no weight decay, AMSGrad or gradient scaling.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

#: ``torch.optim.Adam(fused=True)``'s hyper-parameters besides ``lr``, in its state_dict's order and with its values.
_FIXED = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "maximize": False,
          "foreach": None, "capturable": False, "differentiable": False, "fused": True,
          "decoupled_weight_decay": False}
#: Devices torch's fused Adam kernel runs on.
_FUSED_DEVICES = ("cpu", "cuda")


class FusedAdam:
    """``torch.optim.Adam(params, lr=lr, fused=True)`` without ``torch.optim`` (module docstring).

    Parameters
    ----------
    params
        The tensors to optimise (floating point, each on a CPU or CUDA device),
        or parameter-group dicts ``{"params": [...], "lr": ...}``.
    lr
        Learning rate of every group that does not set its own.

    Attributes
    ----------
    param_groups
        As ``torch.optim``: dicts of ``params`` and hyper-parameters; set
        ``group["lr"]`` between steps to schedule the learning rate.
    state
        Parameter -> ``{"step", "exp_avg", "exp_avg_sq"}``, created at its first step
        (``step`` a float32 scalar tensor on the parameter's device).
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3):
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults: dict[str, Any] = {"lr": lr, **_FIXED}
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        seen: set[int] = set()
        for group in groups:
            tensors = list(group["params"])
            for tensor in tensors:
                _check_fusable(tensor)
                if id(tensor) in seen:
                    raise ValueError("some parameters appear in more than one parameter group")
                seen.add(id(tensor))
            self.param_groups.append({"params": tensors, "lr": group.get("lr", lr), **_FIXED})

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for group in self.param_groups:
            for tensor in group["params"]:
                if tensor.grad is None:
                    continue
                if set_to_none:
                    tensor.grad = None
                else:
                    tensor.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient (torch's fused kernel, per device and dtype)."""
        for group in self.param_groups:
            # (device, dtype) -> [params, grads, exp_avgs, exp_avg_sqs, steps]: the kernel takes one of each
            buckets: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
            for tensor in group["params"]:
                if tensor.grad is None:
                    continue
                if tensor.grad.is_sparse:
                    raise RuntimeError("Adam does not support sparse gradients")
                state = self.state.get(tensor)
                if not state:
                    state = self.state[tensor] = {
                        "step": torch.zeros((), dtype=torch.float32, device=tensor.device),
                        "exp_avg": torch.zeros_like(tensor, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(tensor, memory_format=torch.preserve_format),
                    }
                lists = buckets.setdefault((tensor.device, tensor.dtype), [[], [], [], [], []])
                for into, value in zip(lists, (tensor, tensor.grad, state["exp_avg"], state["exp_avg_sq"],
                                               state["step"])):
                    into.append(value)
            beta1, beta2 = group["betas"]
            for params, grads, exp_avgs, exp_avg_sqs, steps in buckets.values():
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                                   beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                                   maximize=group["maximize"], grad_scale=None, found_inf=None)

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [...]}``, laid out as ``torch.optim.Adam.state_dict()``."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            start = len(index)
            index.update({id(tensor): start + k for k, tensor in enumerate(group["params"])})
            groups.append({**{key: value for key, value in group.items() if key != "params"},
                           "params": list(range(start, len(index)))})
        return {"state": {index[id(tensor)]: dict(state) for tensor, state in self.state.items()},
                "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the state of :meth:`state_dict` or of ``torch.optim.Adam(fused=True).state_dict()``.

        Raises
        ------
        ValueError
            The groups differ in number or size, or were not a fused Adam's (another
            update rule: continuing it with this kernel would change the numbers).
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        by_index: dict[int, torch.Tensor] = {}
        for group, saved in zip(self.param_groups, saved_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "optimizer's group")
            changed = sorted(key for key, value in _FIXED.items() if saved.get(key, value) != value)
            if changed:
                raise ValueError(f"loaded state dict is not a fused Adam's (differs in {', '.join(changed)})")
            by_index.update(zip(saved["params"], group["params"]))
        state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for key, values in state_dict["state"].items():
            if key not in by_index:
                raise ValueError(f"loaded state dict holds state for parameter {key!r}, which no group has")
            tensor = by_index[key]
            # As torch.optim: the fused kernel's step is float32 on the parameter's device; the
            # moments take the parameter's dtype and device.
            state[tensor] = {name: value.to(dtype=torch.float32 if name == "step" else tensor.dtype,
                                            device=tensor.device)
                             for name, value in values.items()}
        for group, saved in zip(self.param_groups, saved_groups):
            group.update({key: value for key, value in saved.items() if key != "params"})
        self.state = state


def _check_fusable(tensor: torch.Tensor) -> None:
    """``ValueError`` unless the fused kernel takes ``tensor`` (a floating-point leaf on a CPU or CUDA device)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"optimizer can only optimize Tensors, got {type(tensor).__name__}")
    if not tensor.is_floating_point() or tensor.device.type not in _FUSED_DEVICES:
        raise ValueError(f"the fused Adam kernel takes floating-point tensors on {' or '.join(_FUSED_DEVICES)}, "
                         f"got {tensor.dtype} on {tensor.device}")
    if not tensor.is_leaf:
        raise ValueError("can't optimize a non-leaf Tensor")
