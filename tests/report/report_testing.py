"""Options shared by the report tests (imported by name: conftest modules are not importable)."""

#: small diagnostics for tests (the defaults stay K = 1000, 100 draws, 16 KL samples)
FAST = dict(iw_samples=8, n_draws=4, kl_samples=2, device="cpu", progress=False)
