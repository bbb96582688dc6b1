"""glibc keeps freed tensor memory for reuse once the command line asked it to; a user's own setting wins."""

import subprocess
import sys
import textwrap

import pytest

from ppl_vae import _allocator

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")

# Page faults over 40 steps of a 16-configuration MLP CVAE (after 10 warm-up steps), printed by a fresh process.
FAULT_PROBE = textwrap.dedent("""
    import resource, sys
    import torch
    from ppl_vae._allocator import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    torch.set_num_threads(1)
    from ppl_vae.data import synthetic_pairs
    from ppl_vae.inference import fit
    from ppl_vae.models import CVAEConfig, build_model
    data = synthetic_pairs(512, 16, correlation="noise_1_2", seed=0)
    models = [build_model(CVAEConfig(16, 16, 8, arch="mlp", hidden_dims=(128,))) for _ in range(16)]
    options = {"seed": list(range(16)), "batch_size": 128, "progress": False}
    fit(models, data, steps=10, **options)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fit(models, data, steps=40, **options)
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str, env=None) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", FAULT_PROBE, mode], capture_output=True, text=True, check=True,
                          env=env)
    applied, faults = done.stdout.split()
    return applied, int(faults)


@linux_only
def test_kept_memory_is_reused_without_faulting_pages_in():
    import os

    applied, kept = _faults("keep")
    _, by_environment = _faults("default", {**os.environ, **_allocator.allocator_environment()})
    _, default = _faults("default")
    assert applied == "True"
    # glibc's defaults fault about a thousand fresh pages in per step here (some 44,000 over the 40 measured);
    # kept, a few dozen to a few thousand (more on a loaded machine), never within 5x of that
    assert max(kept, by_environment) * 5 < default, (kept, by_environment, default)


@linux_only
def test_a_users_own_allocator_setting_is_left_alone(monkeypatch):
    for name in _allocator.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert _allocator.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so")
    assert _allocator.keep_freed_memory() is False


def test_nothing_is_applied_off_linux(monkeypatch):
    monkeypatch.setattr(_allocator.sys, "platform", "darwin")
    assert _allocator.keep_freed_memory() is False


def test_the_environment_form_names_glibcs_variables():
    assert _allocator.allocator_environment() == {"MALLOC_MMAP_THRESHOLD_": str(_allocator.MMAP_THRESHOLD),
                                                  "MALLOC_TRIM_THRESHOLD_": str(_allocator.TRIM_THRESHOLD)}
    assert _allocator.MMAP_THRESHOLD <= 32 * 1024 * 1024  # glibc refuses more on 64-bit systems
