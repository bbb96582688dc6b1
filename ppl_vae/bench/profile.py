"""Where an SVI step of ``fit`` spends its time, and what the Pyro-trace ELBO costs in it.

``python -m ppl_vae.bench.profile [digits|mnist_shaped]`` prints

1. an *ablation* of :func:`ppl_vae.inference.fit` on the MLP CVAE at batch
   128: the plain-PyTorch step, ``fit`` as it is, and ``fit`` with its loss
   (:class:`~ppl_vae.inference.traced.TracedLoss`: the Pyro program's ELBO,
   traced) swapped for the hand-written loss of :mod:`ppl_vae.bench.reference`:
   the difference is what the Pyro loss costs inside the engine, the rest is
   the engine's own loop (batches, noise, schedule, clipping, bookkeeping);
2. a pyinstrument call tree of ``fit``'s step (when pyinstrument is installed).

The ablation patches the trainer *for the duration of one timed block only*
(restored in ``finally``): it measures what a change would gain, it is not a
way to train.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import pandas as pd
import torch

from ppl_vae.bench.cases import Case, DeviceBatches, bench_config, bench_data, make_step, seeded_model
from ppl_vae.bench.harness import repeat_block, time_interleaved


@contextlib.contextmanager
def _patched(owner, name: str, value) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


class _PlainLoss:
    """Stands in for the engine's :class:`~ppl_vae.inference.traced.TracedLoss`: the plain-PyTorch loss (one model)."""

    def __init__(self, module, parameters, **_):
        self.module = module

    def __call__(self, batch, kl_multipliers=None, kl_out=None) -> torch.Tensor:  # no KL history
        from ppl_vae.bench.reference import plain_loss

        rows = batch[0].shape[-2]
        return plain_loss(self.module, *batch, data_size=rows).reshape(1) / rows


@contextlib.contextmanager
def _ablation(plain_elbo: bool) -> Iterator[None]:
    from ppl_vae.inference import trainer

    with contextlib.ExitStack() as stack:
        if plain_elbo:
            stack.enter_context(_patched(trainer, "TracedLoss", _PlainLoss))
        yield


ABLATIONS = {
    "fit": False,
    "fit_plain_loss": True,
}


def overhead_breakdown(data: str = "digits", *, batch_size: int = 128, steps: int = 40, repeats: int = 9,
                       n_synthetic: int = 4096) -> pd.DataFrame:
    """Seconds per step of plain PyTorch and of ``fit`` under each ablation (MLP CVAE, CPU).

    Returns
    -------
    pandas.DataFrame
        One row per variant: ``ms_per_step``, ``ratio_to_plain``, ``spread``.
    """
    from ppl_vae.inference import fit

    bundle = bench_data(data, n_synthetic=n_synthetic)
    case = Case(data, "cvae", "mlp", batch_size)
    config = bench_config(case, bundle)
    cpu = torch.device("cpu")

    def fit_block(flags):
        model = seeded_model(config, cpu)

        def block() -> None:
            with _ablation(flags):
                fit(model, bundle, steps=steps, batch_size=batch_size, seed=0, device=cpu, progress=False)

        return block

    plain = make_step("plain", seeded_model(config, cpu), DeviceBatches(bundle.tensors(), batch_size))
    blocks = {"plain": (repeat_block(plain, steps), steps)}
    blocks.update({name: (fit_block(flags), steps) for name, flags in ABLATIONS.items()})
    for block, _ in blocks.values():
        block()  # warm-up
    timings = time_interleaved(blocks, repeats=repeats)
    reference = timings["plain"].seconds_per_step
    return pd.DataFrame([{"case": case.label, "variant": name, "ms_per_step": t.seconds_per_step * 1e3,
                          "ratio_to_plain": t.seconds_per_step / reference, "spread": t.spread}
                         for name, t in timings.items()])


def profile_fit_step(data: str = "digits", *, batch_size: int = 128, steps: int = 300) -> str:
    """pyinstrument's call tree of ``fit`` on the MLP CVAE (text), or a note if pyinstrument is missing."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return "pyinstrument is not installed (pip install 'ppl-vae[profile]')"
    from ppl_vae.inference import fit

    bundle = bench_data(data, n_synthetic=4096)
    model = seeded_model(bench_config(Case(data, "cvae", "mlp", batch_size), bundle), torch.device("cpu"))
    fit(model, bundle, steps=20, batch_size=batch_size, device="cpu", progress=False)
    profiler = Profiler(interval=0.0002)
    profiler.start()
    fit(model, bundle, steps=steps, batch_size=batch_size, device="cpu", progress=False)
    profiler.stop()
    return profiler.output_text(unicode=False, color=False)


def main(argv: list[str] | None = None) -> None:
    data = (argv or sys.argv[1:] or ["digits"])[0]
    torch.set_num_threads(1)
    print(overhead_breakdown(data).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(profile_fit_step(data))


if __name__ == "__main__":
    main()
