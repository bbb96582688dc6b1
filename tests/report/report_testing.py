"""Options shared by the report tests (imported by name: conftest modules are not importable)."""

#: small diagnostics for tests (the defaults stay K = 1000, 100 draws, 16 KL samples)
FAST = dict(iw_samples=8, n_draws=4, kl_samples=2, device="cpu", progress=False)


def kl_history_fixture(sites: dict[str, int], steps=(0, 1, 2, 5, 10, 20, 50, 100), collapse_at=None, seed=0):
    """A Dataset of exactly the shared kl_history contract: ``<s>_kl`` over ("step", "<s>_dim"), nats.

    ``collapse_at``: site -> {dimension: step from which its KL decays below 0.01 nats}.
    """
    import numpy as np
    import xarray as xr

    rng = np.random.default_rng(seed)
    steps = np.asarray(steps, dtype=np.int64)
    variables = {}
    for site, n in sites.items():
        kl = np.exp(rng.normal(0.0, 0.3, size=(steps.size, n))) * np.linspace(0.5, 2.0, n)
        for dim, start in (collapse_at or {}).get(site, {}).items():
            kl[steps >= start, dim] = 1e-3 * np.exp(-steps[steps >= start] / 100.0)
        variables[f"{site}_kl"] = (("step", f"{site}_dim"), kl, {"units": "nats"})
    coords = {"step": steps, **{f"{s}_dim": np.arange(n) for s, n in sites.items()}}
    return xr.Dataset(variables, coords=coords, attrs={"rows": "held-out", "source": "fit", "collapse_epsilon": 0.01})


class PyroVAE:
    """A Gaussian VAE written the usual Pyro way (not one of the suite's classes), latent site ``code``."""

    def __init__(self, x_dim=64, z_dim=3):
        import torch

        self.z_dim = z_dim
        self.enc = torch.nn.Linear(x_dim, 2 * z_dim)
        self.dec = torch.nn.Linear(z_dim, x_dim)

    def model(self, x):
        import pyro
        import pyro.distributions as dist

        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("code", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        import pyro
        import pyro.distributions as dist

        pyro.module("enc", self.enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.enc(x).chunk(2, dim=-1)
            pyro.sample("code", dist.Normal(loc, log_scale.exp()).to_event(1))
