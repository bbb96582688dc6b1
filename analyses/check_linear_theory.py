"""Longer check: SVI-trained linear VAE, CVAE and MHVAE against the closed forms (SPEC 4).

Larger than the unit tests (32-dimensional data, 16 latent dimensions by
default). For each family and setting it trains the linear model on synthetic
Gaussian data, computes the theory on the same data, and prints measured vs
predicted collapsed-mode counts and the largest relative error of the active
decoder singular values. It then trains the linear CVAE on the bundled digits
(x = bottom-left 4x4 quadrant, y = the other three) at beta in {0.5, 1, 2} and
prints measured vs predicted collapsed modes.

Exits 1 when a synthetic check misses (count differs, an active singular value
is off by more than 3 %, or a collapsed one is above 0.05). The digits rows are
reported, not judged: modes of real data sit close to the thresholds.

    python analyses/check_linear_theory.py [--steps 6000] [--device auto]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from ppl_vae.data import load, synthetic_gaussian, synthetic_pairs
from ppl_vae.inference import fit
from ppl_vae.models import CVAEConfig, MHVAEConfig, VAEConfig, build_model
from ppl_vae.models.readout import readout_summary, theory_for

ACTIVE_REL_TOL, COLLAPSED_ABS_TOL = 0.03, 0.05


def spaced_spectrum(dim: int, largest: float = 9.0, smallest: float = 0.05) -> list[float]:
    """Geometrically spaced variances, so that no theta sits right at a collapse threshold by accident."""
    return np.geomspace(largest, smallest, dim).tolist()


def synthetic_cases(dim: int, latent: int, n: int):
    """(label, config, bundle) for the synthetic checks: three settings per family."""
    spectrum = spaced_spectrum(dim)
    gaussian = synthetic_gaussian(n, dim, spectrum=spectrum, seed=11)
    pairs = synthetic_pairs(n, dim, correlation="noise_1_2", spectrum=spectrum, seed=11)
    for beta, eta_dec in [(0.5, 0.5), (1.0, 1.0), (2.0, 1.2)]:
        yield f"vae beta={beta} eta_dec={eta_dec}", VAEConfig(dim, latent, beta=beta, eta_dec=eta_dec), gaussian
    for beta, eta_dec in [(0.5, 0.5), (1.0, 0.8), (2.0, 0.8)]:
        config = CVAEConfig(dim, dim, latent, beta=beta, eta_dec=eta_dec)
        yield f"cvae beta={beta} eta_dec={eta_dec}", config, pairs
    for beta1, beta2, eta_dec, sigma1 in [(1.0, 1.0, 0.7, 1.0), (1.0, 1.0, 1.2, 1.5), (1.0, 2.0, 1.0, 1.0)]:
        config = MHVAEConfig(dim, (latent, latent), beta1=beta1, beta2=beta2, eta_dec=eta_dec, sigma1=sigma1)
        yield f"mhvae beta1={beta1} beta2={beta2} eta_dec={eta_dec} sigma1={sigma1}", config, gaussian


def train_and_compare(config, bundle, *, steps: int, lr: float, lr_decay: float, device: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(config)
    result = fit(model, bundle, steps=steps, lr=lr, lr_decay=lr_decay, seed=seed, device=device, progress=False)
    model.to("cpu")
    theory = theory_for(config, bundle)
    return readout_summary(model.linear_readout(bundle), theory), result


def passes(summary: dict) -> bool:
    return (summary["n_collapsed_measured"] == summary["n_collapsed_predicted"]
            and summary["max_rel_error_active_decoder_sv"] <= ACTIVE_REL_TOL
            and summary["max_collapsed_decoder_sv"] < COLLAPSED_ABS_TOL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--lr-decay", type=float, default=None, help="default: lr falls 50-fold over the run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--digits-eta-dec", type=float, default=0.3)
    parser.add_argument("--families", default="vae,cvae,mhvae",
                        help="comma-separated synthetic families to check ('' for none)")
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (these small models run fastest on one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lr_decay = args.lr_decay if args.lr_decay is not None else 0.02 ** (1.0 / args.steps)
    train = {"steps": args.steps, "lr": args.lr, "lr_decay": lr_decay, "device": args.device}

    header = f"{'setting':<48} {'collapsed meas/pred':>20} {'max rel err active sv':>22} {'max collapsed sv':>17} {'s':>6}"
    print(f"linear models on synthetic data: dim {args.dim}, latent {args.latent}, n {args.n}, "
          f"{args.steps} steps, lr {args.lr}, decay {lr_decay:.5f}/step")
    print(header)
    failures = 0
    families = {name.strip() for name in args.families.split(",") if name.strip()}
    for label, config, bundle in synthetic_cases(args.dim, args.latent, args.n):
        if config.family not in families:
            continue
        summary, result = train_and_compare(config, bundle, **train)
        ok = passes(summary)
        failures += not ok
        print(f"{label:<48} {summary['n_collapsed_measured']:>9d} / {summary['n_collapsed_predicted']:<8d} "
              f"{summary['max_rel_error_active_decoder_sv']:>22.4f} {summary['max_collapsed_decoder_sv']:>17.4f} "
              f"{result.wall_time:>6.1f} {'ok' if ok else 'MISS'}", flush=True)

    if not args.skip_digits:
        digits = load("digits", paired=True, split="quadrant")
        print(f"\nlinear CVAE on digits quadrants (x 16 -> y 48), latent {args.latent}, eta_dec {args.digits_eta_dec}")
        print(header)
        for beta in (0.5, 1.0, 2.0):
            config = CVAEConfig(digits.x.shape[1], digits.y.shape[1], args.latent, beta=beta,
                                eta_dec=args.digits_eta_dec)
            summary, result = train_and_compare(config, digits, **train)
            print(f"{'digits cvae beta=' + str(beta):<48} {summary['n_collapsed_measured']:>9d} / "
                  f"{summary['n_collapsed_predicted']:<8d} {summary['max_rel_error_active_decoder_sv']:>22.4f} "
                  f"{summary['max_collapsed_decoder_sv']:>17.4f} {result.wall_time:>6.1f}", flush=True)

    print(f"\n{failures} synthetic check(s) missed" if failures else "\nall synthetic checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
