"""The other side of the command-line grid benchmark: a plain PyTorch script, the paper's way.

It trains the bench's digits MLP CVAE grid one configuration after another, each
with its own ``torch.utils.data.DataLoader``, Adam and a checkpoint written at
the end, as the authors' scripts do, and imports nothing but torch, NumPy and
scikit-learn's bundled digits (so that a cold start costs it what such a script
costs)::

    python -m ppl_vae.bench.plain_grid --epochs 50 --out /tmp/plain --threads 1

The networks have the widths of ``ppl-vae sweep --arch mlp --hidden 128
--latent-dim 16`` (one hidden layer; encoder q(z | x, y), decoder y from z plus
a branch from x, fixed N(0, eta_enc^2) prior), the loss is the negative
beta-ELBO per sample with one reparameterised draw and the closed-form KL, and
10 % of the rows are held out as the sweep holds them out. It does no
diagnostics and writes no diagnostics files: what the sweep does on top is in
its own time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

_LOG_2PI = math.log(2.0 * math.pi)


def digits_quadrants(test_fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8x8 digits scaled to [0, 1]: x the bottom-left quadrant ``(n, 16)``, y the rest ``(n, 48)``."""
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images / 16.0, dtype=torch.float32)
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    images = images[keep[round(test_fraction * len(images)):]]
    x = images[:, 4:, :4].reshape(len(images), -1)
    y = torch.cat([images[:, :4, :4].reshape(len(images), -1), images[:, :4, 4:].reshape(len(images), -1),
                   images[:, 4:, 4:].reshape(len(images), -1)], 1)
    return x, y


class PlainCVAE(nn.Module):
    """An MLP CVAE: q(z | x, y) Gaussian, p(y | x, z) = N(f(z) + g(x), eta_dec^2), p(z) = N(0, eta_enc^2)."""

    def __init__(self, x_dim: int, y_dim: int, latent_dim: int, hidden: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(x_dim + y_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
        self.decoder_z = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        self.decoder_x = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))

    def loss(self, x: torch.Tensor, y: torch.Tensor, beta: float, eta_dec: float, eta_enc: float = 1.0):
        """Negative beta-ELBO per sample of the batch (one draw, closed-form KL), nats."""
        loc, log_scale = self.encoder(torch.cat([x, y], 1)).chunk(2, -1)
        scale = nn.functional.softplus(log_scale) + 1e-5
        z = loc + scale * torch.randn_like(loc)
        mean = self.decoder_z(z) + self.decoder_x(x)
        reconstruction = (-0.5 * (((y - mean) / eta_dec) ** 2 + _LOG_2PI) - math.log(eta_dec)).sum(-1)
        ratio = (scale / eta_enc) ** 2
        kl = 0.5 * (ratio + (loc / eta_enc) ** 2 - 1.0 - torch.log(ratio)).sum(-1)
        return (beta * kl - reconstruction).mean()


def train_one(x, y, *, beta: float, eta_dec: float, seed: int, epochs: int, batch_size: int, lr: float,
              latent_dim: int, hidden: int) -> tuple[PlainCVAE, float]:
    """One configuration trained alone with a shuffling DataLoader; the model and its last epoch's mean loss."""
    torch.manual_seed(seed)
    model = PlainCVAE(x.shape[1], y.shape[1], latent_dim, hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    for _ in range(epochs):
        losses = []
        for xb, yb in loader:
            optimiser.zero_grad(set_to_none=True)
            loss = model.loss(xb, yb, beta, eta_dec)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    return model, float(np.mean(losses))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ppl_vae.bench.plain_grid", description=__doc__.split("\n")[0])
    parser.add_argument("--beta", default="0.1,0.5,1,2")
    parser.add_argument("--eta-dec", default="0.5,1")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", required=True, help="folder for one checkpoint per configuration")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    x, y = digits_quadrants()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = itertools.product(*([float(v) for v in text.split(",")] for text in (args.beta, args.eta_dec)),
                             [int(v) for v in args.seeds.split(",")])
    final = {}
    for beta, eta_dec, seed in grid:
        model, loss = train_one(x, y, beta=beta, eta_dec=eta_dec, seed=seed, epochs=args.epochs,
                                batch_size=args.batch_size, lr=args.lr, latent_dim=args.latent_dim, hidden=args.hidden)
        name = f"beta={beta:g}_eta_dec={eta_dec:g}_seed={seed}"
        torch.save(model.state_dict(), out / f"{name}.pt")
        final[name] = loss
    (out / "final_loss.json").write_text(json.dumps(final, indent=1))
    print(f"{len(final)} configurations trained in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
