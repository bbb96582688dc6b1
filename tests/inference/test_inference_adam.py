"""FusedAdam is torch.optim.Adam(fused=True) bit for bit, state_dict included, without importing torch._dynamo."""

import subprocess
import sys

import pytest
import torch

from ppl_vae.inference.adam import FusedAdam


def _parameters(seed: int) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (3,), (2, 4, 6), ()]
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]


def _train(optimiser, parameters, steps: range, lr: float = 0.05, decay: float = 0.97) -> None:
    """Steps of a loss whose gradients change every step; one parameter gets no gradient on odd steps."""
    for step in steps:
        for group in optimiser.param_groups:
            group["lr"] = lr * decay**step
        optimiser.zero_grad(set_to_none=True)
        used = parameters if step % 2 == 0 else parameters[:-1]
        loss = sum(((p - 0.1 * step) ** 2).sum() * (k + 1) + p.sin().sum() for k, p in enumerate(used))
        loss.backward()
        optimiser.step()


def test_its_updates_and_state_are_torchs_fused_adam_bit_for_bit():
    ours, theirs = _parameters(0), _parameters(0)
    mine, torchs = FusedAdam(ours, lr=0.05), torch.optim.Adam(theirs, lr=0.05, fused=True)
    _train(mine, ours, range(25))
    _train(torchs, theirs, range(25))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    saved_mine, saved_torch = mine.state_dict(), torchs.state_dict()
    assert saved_mine["param_groups"] == saved_torch["param_groups"]  # keys, order and values
    assert list(saved_mine["state"]) == list(saved_torch["state"])
    for index, state in saved_torch["state"].items():
        assert list(saved_mine["state"][index]) == list(state)
        for name, value in state.items():
            mine_value = saved_mine["state"][index][name]
            assert mine_value.dtype == value.dtype and torch.equal(mine_value, value)


@pytest.mark.parametrize("direction", ["torch -> ours", "ours -> torch"])
def test_a_state_dict_of_either_resumes_in_the_other_to_the_same_numbers(direction):
    first, second = (torch.optim.Adam, FusedAdam) if direction == "torch -> ours" else (FusedAdam, torch.optim.Adam)

    def make(kind, parameters):
        return kind(parameters, lr=0.05, fused=True) if kind is torch.optim.Adam else kind(parameters, lr=0.05)

    straight = _parameters(1)
    _train(make(first, straight), straight, range(20))
    resumed = _parameters(1)
    before = make(first, resumed)
    _train(before, resumed, range(8))
    after = make(second, resumed)
    after.load_state_dict(before.state_dict())
    _train(after, resumed, range(8, 20))
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_a_state_of_another_update_rule_or_size_is_refused():
    parameters = _parameters(2)
    unfused = torch.optim.Adam(parameters, lr=0.05, foreach=False)
    _train(unfused, parameters, range(2))
    with pytest.raises(ValueError, match="not a fused Adam's"):
        FusedAdam(parameters).load_state_dict(unfused.state_dict())
    with pytest.raises(ValueError, match="doesn't match the size"):
        FusedAdam(parameters[:2]).load_state_dict(FusedAdam(parameters).state_dict())
    with pytest.raises(ValueError, match="floating-point"):
        FusedAdam([torch.zeros(2, dtype=torch.int64)])
    with pytest.raises(ValueError, match="empty"):
        FusedAdam([])


def test_training_with_it_does_not_import_torch_dynamo():
    """torch.optim imports torch._dynamo (~1.3 s) at its first step; a fit must not pay it."""
    code = """
import sys
import torch
from ppl_vae.inference.adam import FusedAdam
weight = torch.nn.Parameter(torch.ones(3))
optimiser = FusedAdam([weight], lr=0.1)
(weight ** 2).sum().backward()
optimiser.step()
optimiser.load_state_dict(optimiser.state_dict())
print("torch._dynamo" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_torch_without_the_private_kernel_trains_with_torchs_own_fused_adam(monkeypatch):
    from ppl_vae.inference.trainer import _make_optimizer

    monkeypatch.delattr(torch, "_fused_adam_")
    optimizer = _make_optimizer("adam", [torch.nn.Parameter(torch.ones(3))], 0.1, None)
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["fused"] is True
