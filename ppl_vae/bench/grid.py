"""Two benchmark sections of the one-engine work: a grid end to end, and the ELBO's gradient variance.

- :func:`grid_rows`: a 16-configuration digits MLP CVAE grid (beta x eta_dec) trained and
  diagnosed by ``run_sweep`` (one run over a ``configs`` plate, held-out diagnostics), against
  the way the paper's own scripts train it: one configuration at a time, plain PyTorch, a
  ``torch.utils.data.DataLoader`` (training only on their side).
- :func:`gradient_variance_rows`: for the MHVAE, the variance of the z2-encoder gradient with
  every term sampled (``Trace_ELBO``) against the analytic KL of z2 given the sampled z1, the
  estimator the engine uses (:func:`ppl_vae.inference.elbo.site_estimators`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ppl_vae.bench.harness import synchronise

#: The grid of :func:`grid_rows`: 4 x 4 configurations.
GRID = {"beta": [0.25, 0.5, 1.0, 2.0], "eta_dec": [0.25, 0.5, 1.0, 2.0]}


def _row(section: str, case: str, variant: str, seconds: float, note: str) -> dict:
    return {"section": section, "case": case, "variant": variant, "steps_per_s": math.nan,
            "samples_per_s": math.nan, "ratio_to_plain": math.nan, "wall_s": seconds, "peak_host_mb": math.nan,
            "peak_device_mb": math.nan, "note": note}


def plain_dataloader_grid(bundle, configs, *, epochs: int, batch_size: int, lr: float) -> float:
    """Seconds to train each configuration alone with plain PyTorch and a DataLoader (the paper's way)."""
    from ppl_vae.bench.reference import plain_loss
    from ppl_vae.models import build_model

    dataset = torch.utils.data.TensorDataset(*bundle.tensors())
    start = time.perf_counter()
    for k, config in enumerate(configs):
        torch.manual_seed(k)
        model = build_model(config)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
        for _ in range(epochs):
            for batch in loader:
                optimiser.zero_grad(set_to_none=True)
                (plain_loss(model, *batch, data_size=batch[0].shape[0]) / batch[0].shape[0]).backward()
                optimiser.step()
    return time.perf_counter() - start


def grid_rows(device: torch.device, *, epochs: int, log: Callable[[str], None]) -> list[dict]:
    """Our grid end to end (training + held-out diagnostics) against the plain one-at-a-time loop."""
    from ppl_vae.bench.cases import bench_data
    from ppl_vae.models import CVAEConfig
    from ppl_vae.sweep import expand_grid, run_sweep

    bundle = bench_data("digits")
    base = CVAEConfig(bundle.x.shape[1], bundle.y.shape[1], 16, arch="mlp", hidden_dims=(128,))
    configs, _ = expand_grid(base, GRID)
    seeds = list(range(len(configs)))  # independent replicates' worth of seeds, as the plain loop uses
    case = f"digits/cvae-mlp/b128/K{len(configs)}/{epochs}ep"
    train_rows = bundle.subset(slice(0, bundle.n - round(0.1 * bundle.n)))
    # One untimed epoch of each side first: the first call in a process imports and initialises
    # (ArviZ alone takes seconds), a cost of the process, not of the grid.
    run_sweep(None, configs[:2], bundle, seeds=seeds[:2], epochs=1, batch_size=128, device=device, diagnostics=True)
    plain_dataloader_grid(train_rows, configs[:1], epochs=1, batch_size=128, lr=1e-3)
    synchronise(device)
    start = time.perf_counter()
    run_sweep(None, configs, bundle, seeds=seeds, epochs=epochs, batch_size=128, lr=1e-3, device=device,
              diagnostics=True)
    synchronise(device)
    ours = time.perf_counter() - start
    theirs = plain_dataloader_grid(train_rows, configs, epochs=epochs, batch_size=128, lr=1e-3)
    log(f"  grid: run_sweep {ours:.1f} s (diagnostics included), plain DataLoader loop {theirs:.1f} s")
    return [_row("grid", case, "run_sweep", ours, "one run over the configs plate; held-out diagnostics included"),
            _row("grid", case, "plain_dataloader", theirs,
                 f"one configuration at a time, training only; ours is {theirs / ours:.2f}x faster")]


def gradient_variance_rows(*, draws: int, log: Callable[[str], None]) -> list[dict]:
    """Variance of the MHVAE's z2-encoder gradient: all terms sampled vs the analytic z2 KL."""
    from ppl_vae.data import load
    from ppl_vae.inference.elbo import ANALYTIC, SAMPLED, elbo_loss
    from ppl_vae.inference.randomness import NOISE_STREAM, ConfigNoise, make_generators
    from ppl_vae.models import MHVAEConfig, build_model

    x = load("digits").x[:128]
    rows = []
    for arch in ("linear", "mlp"):
        torch.manual_seed(0)
        model = build_model(MHVAEConfig(64, (16, 16), arch=arch, hidden_dims=(64,), sigma1=0.5, eta_enc=0.5,
                                        eta_dec=0.5))
        encoder2 = [p for p in model.encoder2.parameters() if p.requires_grad]
        variance = {}
        for kind in (SAMPLED, ANALYTIC):
            grads = []
            with ConfigNoise(make_generators([1], NOISE_STREAM, torch.device("cpu"))):
                for _ in range(draws):
                    loss = elbo_loss(model.model, model.guide, x, estimators={"z1": SAMPLED, "z2": kind})
                    grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, encoder2)]))
            variance[kind] = float(torch.stack(grads).var(0).sum())
        ratio = variance[SAMPLED] / variance[ANALYTIC]
        log(f"  gradient variance, mhvae-{arch}: analytic z2 KL {ratio:.1f}x lower than Trace_ELBO")
        rows.append(_row("elbo_variance", f"digits/mhvae-{arch}/b128", "analytic_z2_kl", math.nan,
                         f"z2-encoder gradient variance {ratio:.2f}x lower than all-sampled Trace_ELBO "
                         f"({draws} draws: {variance[SAMPLED]:.3g} vs {variance[ANALYTIC]:.3g})"))
    return rows


def headline(table) -> list[str]:
    """The four figures of the engine work, from a bench table (lines; a figure not measured says so)."""
    lines = []
    throughput = table[(table.section == "throughput") & (table.variant == "fit")]
    if len(throughput):
        worst = throughput.loc[throughput.ratio_to_plain.idxmax()]
        lines.append(f"fit / plain PyTorch: worst {worst.ratio_to_plain:.2f}x ({worst.case}), "
                     f"best {throughput.ratio_to_plain.min():.2f}x")
    sweep = table[(table.section == "sweep") & (table.variant == "vectorised")]
    if len(sweep):
        lines.append(f"K = 16 sweep / one configuration: {sweep.iloc[0].note.split(' one')[0]}")
    grid = table[table.section == "grid"].set_index("variant")
    if len(grid):
        lines.append(f"grid end to end vs plain DataLoader loop: "
                     f"{grid.wall_s['plain_dataloader'] / grid.wall_s['run_sweep']:.2f}x faster")
    variance = table[table.section == "elbo_variance"]
    if len(variance):
        lines.append("MHVAE z2-encoder gradient variance, analytic z2 KL vs Trace_ELBO: " + ", ".join(
            f"{row.case.split('/')[1]} {row.note.split('x lower')[0].split()[-1]}x lower"
            for row in variance.itertuples()))
    cold = table[table.section == "cold"]
    if len(cold):
        by_variant = {(row.case, row.variant): row.wall_s for row in cold.itertuples()}
        grid_case = next(case for case, variant in by_variant if variant == "plain_script")
        lines.append(f"grid from the command line, cold, files written: ppl-vae sweep "
                     f"{by_variant[grid_case, 'ppl-vae sweep']:.1f} s vs plain script "
                     f"{by_variant[grid_case, 'plain_script']:.1f} s: "
                     f"{by_variant[grid_case, 'plain_script'] / by_variant[grid_case, 'ppl-vae sweep']:.2f}x faster "
                     f"(plain script with freed memory kept "
                     f"{by_variant.get((grid_case, 'plain_script, freed memory kept'), math.nan):.1f} s); "
                     f"--epochs 1 sweep {by_variant['digits/cvae-mlp/b128/K16/1ep', 'ppl-vae sweep']:.1f} s; "
                     f"ppl-vae --help {by_variant['ppl-vae --help', 'ppl-vae']:.2f} s")
    threads = table[table.section == "threads"]
    if len(threads):
        lines.append(f"ppl-vae train on a busy machine ({threads.iloc[0].case.split(', ')[1]}): " + ", ".join(
            f"{row.variant} {row.wall_s:.1f} s" for row in threads.itertuples()))
    return lines or ["(none of the headline sections was measured)"]
