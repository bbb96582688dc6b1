"""The benchmark: throughput per variant, time to reach the theory, sweep vs separate runs.

:func:`run_bench` measures everything in one process and returns a
:class:`pandas.DataFrame`, one row per measurement (``section``, ``case``,
``variant``, figures); :func:`bench_dataset` turns it into an ``xr.Dataset``.
"""

from __future__ import annotations

import importlib.util
import math
import platform
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyro
import torch
import xarray as xr

from ppl_vae._device import resolve_device
from ppl_vae.bench.cases import (
    Case,
    DeviceBatches,
    bench_config,
    bench_data,
    family_bundle,
    make_step,
    seeded_model,
)
from ppl_vae.bench.grid import gradient_variance_rows, grid_rows
from ppl_vae.bench.harness import PeakMemory, repeat_block, synchronise, time_interleaved
from ppl_vae.inference.convergence import NotConvergedWarning

COLUMNS = ["section", "case", "variant", "steps_per_s", "samples_per_s", "ratio_to_plain", "wall_s",
           "peak_host_mb", "peak_device_mb", "note"]

#: What :func:`run_bench` can measure, in order.
SECTIONS = ("throughput", "overhead", "time_to_theory", "sweep", "grid", "elbo_variance", "cold", "threads")

#: Relative tolerance of "reached the theory": every decoder singular value within 1%.
THEORY_RTOL = 0.01


def default_cases(quick: bool) -> list[Case]:
    """Digits and MNIST-shaped data x (CVAE linear, CVAE MLP, MHVAE MLP) x (batch 128, full batch)."""
    models = [("cvae", "linear"), ("cvae", "mlp"), ("mhvae", "mlp")]
    return [Case(data, family, arch, batch)
            for data in ("digits", "mnist_shaped") for family, arch in models for batch in (128, None)]


def _fit_available() -> bool:
    return importlib.util.find_spec("ppl_vae.inference") is not None and hasattr(
        __import__("ppl_vae.inference", fromlist=["fit"]), "fit")


def throughput_rows(case: Case, bundle, device: torch.device, *, variants: Sequence[str], warmup: int,
                    repeats: int, steps: int, log: Callable[[str], None]) -> list[dict]:
    """Steps/s and samples/s of every variant on one case, with the ratio of each to ``plain``.

    Each variant trains its own freshly seeded model; the variants' timed
    blocks are interleaved (:func:`time_interleaved`). Peak memory is taken
    over each variant's warm-up, which makes every allocation a step needs.
    """
    data = family_bundle(bundle, case.family).to(device)
    config = bench_config(case, data)
    batch = data.n if case.batch_size is None or case.batch_size >= data.n else case.batch_size
    blocks, memory = {}, {}
    for variant in variants:
        model = seeded_model(config, device)
        if variant == "fit":
            block = _fit_block(model, data, case, device, steps)
            warm = [block]
        else:
            step = make_step(variant, model, DeviceBatches(data.tensors(), case.batch_size))
            block = repeat_block(step, steps)
            warm = [step] * max(warmup, 1)
        with PeakMemory(device) as peak:
            for call in warm:
                call()
        blocks[variant], memory[variant] = (block, steps), peak
    timings = time_interleaved(blocks, device=device, repeats=repeats)
    plain = timings["plain"].seconds_per_step if "plain" in timings else None
    rows = []
    for variant, timing in timings.items():
        seconds = timing.seconds_per_step
        note = f"spread {timing.spread:.0%}; epoch {math.ceil(data.n / batch) * seconds:.2f} s"
        if variant == "fit":
            note += "; end to end, set-up included"
        rows.append({"section": "throughput", "case": case.label, "variant": variant,
                     "steps_per_s": 1.0 / seconds, "samples_per_s": batch / seconds,
                     "ratio_to_plain": seconds / plain if plain else math.nan, "wall_s": seconds * steps,
                     "peak_host_mb": memory[variant].host_mb, "peak_device_mb": memory[variant].device_mb,
                     "note": note})
        log(f"  {case.label:34s} {variant:9s} {1.0 / seconds:9.1f} steps/s")
    return rows


def _fit_block(model, data, case: Case, device, steps: int) -> Callable[[], None]:
    from ppl_vae.inference import fit

    def block() -> None:
        fit(model, data, steps=steps, batch_size=case.batch_size, lr=1e-3, seed=0, device=device, progress=False)

    return block


def theory_reached(trained_sv: np.ndarray, theory_sv: np.ndarray, rtol: float = THEORY_RTOL) -> bool:
    """Every decoder singular value within ``rtol`` of the theory.

    A mode the theory collapses (singular value 0) counts as reached when the
    trained value is within ``rtol`` of the largest predicted singular value:
    a relative error to zero is undefined.
    """
    scale = np.where(theory_sv > 0, theory_sv, theory_sv.max())
    return bool(np.all(np.abs(trained_sv - theory_sv) <= rtol * scale))


def time_to_theory(device: torch.device, *, dim: int, n: int, latent_dim: int, beta: float = 1.0,
                   eta_dec: float = 0.5, lr: float = 0.03, lr_decay: float = 0.999, check_every: int = 25,
                   max_steps: int = 20000, seed: int = 0) -> dict:
    """Wall time and steps until a full-batch linear CVAE matches the closed-form decoder singular values.

    Trained with the lean Pyro pattern (``TraceMeanField_ELBO`` as a loss,
    ``torch.optim.Adam``, exponential learning-rate decay) on synthetic pairs;
    the check every ``check_every`` steps is part of the wall time.
    """
    from ppl_vae.models import CVAEConfig
    from ppl_vae.theory import linear_cvae

    bundle = synthetic_pairs_for_theory(n, dim, seed)
    theory = linear_cvae(bundle.x, bundle.y, latent_dim, beta=beta, eta_dec=eta_dec).decoder_sv.values
    data = bundle.to(device)
    model = seeded_model(CVAEConfig(x_dim=dim, y_dim=dim, latent_dim=latent_dim, beta=beta, eta_dec=eta_dec),
                         device, seed)
    step = make_step("pyro", model, DeviceBatches(data.tensors(), None), lr=lr)
    optimiser_decay = _attach_decay(step, lr_decay)
    pyro.set_rng_seed(seed)
    synchronise(device)
    start = time.perf_counter()
    reached, taken = False, 0
    while taken < max_steps and not reached:
        for _ in range(check_every):
            step()
            optimiser_decay()
        taken += check_every
        reached = theory_reached(model.linear_readout(bundle).decoder_sv.values, theory)
    synchronise(device)
    seconds = time.perf_counter() - start
    return {"section": "time_to_theory", "case": f"synthetic/cvae-linear/d{dim}/bfull", "variant": "pyro",
            "steps_per_s": taken / seconds, "samples_per_s": taken * n / seconds,
            "wall_s": seconds if reached else math.nan,
            "note": (f"{taken} steps to every decoder sv within {THEORY_RTOL:.0%}" if reached
                     else f"not within {THEORY_RTOL:.0%} after {taken} steps")}


def synthetic_pairs_for_theory(n: int, dim: int, seed: int):
    """Synthetic CVAE pairs (correlation 1/2) for the convergence check."""
    from ppl_vae.data import synthetic_pairs

    return synthetic_pairs(n, dim, correlation="noise_1_2", seed=seed)


def _attach_decay(step, gamma: float) -> Callable[[], None]:
    """A callable multiplying the learning rate of the optimiser inside ``step`` by ``gamma``."""
    optimiser = next(cell.cell_contents for cell in step.__closure__
                     if isinstance(cell.cell_contents, torch.optim.Optimizer))

    def decay() -> None:
        for group in optimiser.param_groups:
            group["lr"] *= gamma

    return decay


def sweep_rows(device: torch.device, *, n_configs: int, steps: int, batch_size: int | None, repeats: int,
               separate: bool, log: Callable[[str], None]) -> list[dict]:
    """Wall time of a K-configuration vectorised sweep vs one configuration and vs K separate runs.

    A linear CVAE on the digits quadrant split; the grid is beta x eta_dec.
    ``single`` is one configuration through ``run_sweep`` (that is ``fit``),
    ``single_vectorised`` one configuration through the batched path,
    ``vectorised`` all K in one run, ``separate`` K runs of ``fit`` (timed
    once: it is the slow one). Readouts are off: only training is compared.
    """
    from ppl_vae.models import CVAEConfig
    from ppl_vae.sweep import run_sweep

    bundle = bench_data("digits")
    base = CVAEConfig(x_dim=bundle.x.shape[1], y_dim=bundle.y.shape[1], latent_dim=8)
    side = int(round(math.sqrt(n_configs)))
    betas = np.geomspace(0.25, 4.0, side).tolist()
    eta_decs = np.geomspace(0.25, 2.0, max(1, n_configs // side)).tolist()
    grid = {"beta": betas, "eta_dec": eta_decs}
    k = len(betas) * len(eta_decs)
    # Training only: no held-out rows, no diagnostics, no readouts.
    options = {"steps": steps, "batch_size": batch_size, "lr": 1e-2, "device": device, "readout": False,
               "diagnostics": False, "test_fraction": 0.0}
    case = f"digits/cvae-linear/b{batch_size or 'full'}/K{k}"
    plans = {"single_vectorised": ({"beta": betas[:1]}, "always"), "vectorised": (grid, "always")}
    if separate:
        plans = {"single": ({"beta": betas[:1]}, "never"), **plans}

    def sweep(sub_grid, vectorise) -> Callable[[], None]:
        return lambda: run_sweep(base, sub_grid, bundle, vectorise=vectorise, **options)

    blocks, memory = {}, {}
    for name, (sub_grid, vectorise) in plans.items():
        with PeakMemory(device) as peak:
            sweep(sub_grid, vectorise)()  # warm-up
        blocks[name], memory[name] = (sweep(sub_grid, vectorise), 1), peak
    timings = {name: timing.seconds_per_step
               for name, timing in time_interleaved(blocks, device=device, repeats=repeats).items()}
    if separate:
        with PeakMemory(device) as peak:
            start = time.perf_counter()
            sweep(grid, "never")()
            synchronise(device)
            timings["separate"] = time.perf_counter() - start
        memory["separate"] = peak
    reference = timings.get("single", timings["single_vectorised"])
    rows = []
    for name, seconds in timings.items():
        note = f"{seconds / reference:.2f}x one configuration"
        if name == "separate":
            note += f"; separate / vectorised = {seconds / timings['vectorised']:.1f}x"
        rows.append({"section": "sweep", "case": case, "variant": name, "steps_per_s": steps / seconds,
                     "samples_per_s": math.nan, "ratio_to_plain": math.nan, "wall_s": seconds,
                     "peak_host_mb": memory[name].host_mb, "peak_device_mb": memory[name].device_mb, "note": note})
        log(f"  sweep {name:18s} {seconds:8.2f} s")
    return rows


def run_bench(device: str | torch.device = "cpu", *, quick: bool = False, threads: int | None = None,
              cases: Sequence[Case] | None = None, variants: Sequence[str] | None = None,
              sections: Sequence[str] = SECTIONS,
              log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Measure the whole benchmark in this process.

    Parameters
    ----------
    device
        ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'``.
    quick
        Small MNIST-shaped data (1,024 pairs), fewer repeats, 300-step timing
        blocks, a K = 16 sweep of 500 steps and the 50-epoch grid: about four
        and a half minutes on a 2-core CPU; the ``cold`` and ``threads`` sections
        (whole processes, once each in quick mode, three times otherwise) add
        about three and a half minutes under load (measured), less on an idle machine.
    threads
        ``torch.set_num_threads`` for the run (restored afterwards); None:
        leave it. One thread is fastest for these small models on a shared CPU.
    cases, variants, sections
        Restrict what is measured (defaults: everything). ``'overhead'``
        ablates ``fit``'s Pyro overheads on the CPU (see
        :mod:`ppl_vae.bench.profile`); it, ``'cold'`` and ``'threads'``
        (:mod:`ppl_vae.bench.cold`) are skipped on CUDA.
    log
        Called with one progress line per measurement.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`; ``attrs`` hold device, threads, versions.
    """
    device = resolve_device(device)
    log = log or (lambda line: None)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            # Timing runs are short by design; whether they converged is not what is measured.
            warnings.simplefilter("ignore", NotConvergedWarning)
            rows = _measure(device, quick, cases, variants, sections, log)
    finally:
        torch.set_num_threads(previous_threads)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs.update({"device": _device_name(device), "threads": threads or previous_threads,
                        "quick": quick, "torch": torch.__version__, "pyro": pyro.__version__,
                        "python": platform.python_version()})
    return table


def _measure(device, quick, cases, variants, sections, log) -> list[dict]:
    # Blocks of a run's length: ``fit`` is timed end to end, set-up included (a trace of the loss per
    # batch shape, a few steps' time), and a few-step block would time that rather than training.
    repeats, steps, warmup = (3, 300, 2) if quick else (5, 1000, 5)
    variants = list(variants or ("plain", "pyro", "pyro_svi", "fit"))
    if "fit" in variants and not _fit_available():
        variants.remove("fit")
    rows: list[dict] = []
    if "throughput" in sections:
        data = {}
        for case in cases or default_cases(quick):
            if case.data not in data:
                data[case.data] = bench_data(case.data, n_synthetic=1024 if quick else 60000)
            # Full batch on MNIST-shaped pairs: fewer, longer steps.
            big = case.batch_size is None and data[case.data].name == "synthetic"
            rows += throughput_rows(case, data[case.data], device, variants=variants,
                                    warmup=1 if big else warmup, repeats=min(repeats, 3) if big else repeats,
                                    steps=(10 if quick else 4) if big else steps,
                                    log=log)
    if "time_to_theory" in sections:
        # One problem size in both modes: with 16 dims the closely spaced residual
        # eigenvalues of the default spectrum take > 20,000 steps to resolve to 1%.
        row = time_to_theory(device, dim=8, n=2000, latent_dim=4)
        log(f"  time to theory: {row['note']} ({row['wall_s']:.1f} s)")
        rows.append(row)
    if "overhead" in sections and _fit_available() and device.type == "cpu":
        rows += overhead_rows(quick, log)
    if "sweep" in sections:
        rows += sweep_rows(device, n_configs=16, steps=500 if quick else 2000, batch_size=128,
                           repeats=3 if quick else 5, separate=_fit_available(), log=log)
    if "grid" in sections:
        # 50 epochs in both modes: with fewer the figure would time set-up and diagnostics, not training.
        rows += grid_rows(device, epochs=50, log=log)
    if "elbo_variance" in sections:
        rows += gradient_variance_rows(draws=100 if quick else 300, log=log)
    if "cold" in sections and device.type == "cpu":
        from ppl_vae.bench.cold import cold_rows

        rows += cold_rows(epochs=50, repeats=1 if quick else 3, log=log)
    if "threads" in sections and device.type == "cpu":
        from ppl_vae.bench.cold import threads_rows

        rows += threads_rows(repeats=1 if quick else 3, log=log)
    return rows


def overhead_rows(quick: bool, log: Callable[[str], None]) -> list[dict]:
    """What removing each Pyro overhead from ``fit`` would gain (MLP CVAE, batch 128, CPU).

    See :func:`ppl_vae.bench.profile.overhead_breakdown`; skipped with a note
    if the model or trainer internals it patches have changed.
    """
    from ppl_vae.bench.profile import overhead_breakdown

    rows = []
    for data in ("digits", "mnist_shaped"):
        try:
            table = overhead_breakdown(data, steps=100 if quick else 300, repeats=3 if quick else 9,
                                       n_synthetic=1024 if quick else 4096)
        except AttributeError as err:  # the patched internals moved
            log(f"  overhead ablation unavailable: {err}")
            return rows
        for record in table.to_dict("records"):
            seconds = record["ms_per_step"] / 1e3
            rows.append({"section": "overhead", "case": record["case"], "variant": record["variant"],
                         "steps_per_s": 1.0 / seconds, "samples_per_s": 128 / seconds,
                         "ratio_to_plain": record["ratio_to_plain"], "wall_s": math.nan,
                         "peak_host_mb": math.nan, "peak_device_mb": math.nan,
                         "note": f"spread {record['spread']:.0%}; CPU only"})
            log(f"  overhead {record['case']:24s} {record['variant']:32s} x{record['ratio_to_plain']:.2f}")
    return rows


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def bench_dataset(table: pd.DataFrame) -> xr.Dataset:
    """The benchmark table as an ``xr.Dataset`` over ``row`` (figures as variables, labels as coordinates)."""
    indexed = table.reset_index(drop=True).rename_axis("row")
    dataset = xr.Dataset.from_dataframe(indexed)
    dataset = dataset.set_coords(["section", "case", "variant", "note"])
    dataset.attrs.update({key: str(value) for key, value in table.attrs.items()})
    return dataset


def format_table(table: pd.DataFrame) -> str:
    """The table as fixed-width text, figures rounded for reading."""
    shown = table.copy()
    for column, digits in (("steps_per_s", 1), ("samples_per_s", 0), ("ratio_to_plain", 2), ("wall_s", 2),
                           ("peak_host_mb", 0), ("peak_device_mb", 0)):
        shown[column] = shown[column].map(lambda v, d=digits: "" if v is None or pd.isna(v) else f"{v:.{d}f}")
    header = "  ".join(f"{key}={value}" for key, value in table.attrs.items())
    return header + "\n" + shown.to_string(index=False)
