"""What to change: from a diagnosed run's ``theory`` group, the hyper-parameters that keep k dimensions active.

Everything here reads the ``theory`` group of :func:`ppl_vae.diagnostics.diagnose`
(its ``theta`` spectrum and hyper-parameter attrs): the run's data are not
needed again.  For a non-linear run the answer is the linear model's with the
same data and hyper-parameters (``attrs['prediction']`` says which).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..theory import mhvae_thresholds_from_spectrum, thresholds_from_spectrum

#: MHVAE threshold variables per level: (variable, hyper-parameter, relation to keep the modes)
MHVAE_COLUMNS = {
    "z1": (("z1_beta2_max", "beta2", "<="), ("z1_eta_dec_max", "eta_dec", "<="), ("z1_beta1_max", "beta1", "<=")),
    "z2": (("z2_beta2_max", "beta2", "<="), ("z2_eta_dec_max", "eta_dec", "<="), ("z2_beta1_min", "beta1", ">=")),
}
SINGLE_COLUMNS = (("beta_max", "beta", "<="), ("eta_dec_max", "eta_dec", "<="))


@dataclass(frozen=True)
class ChangeTable:
    """The 'to keep k dimensions active' table of one latent level."""

    site: str
    table: xr.Dataset  # over n_active
    columns: tuple[tuple[str, str, str], ...]  # (variable, hyper-parameter, "<=" or ">=")
    current: dict[str, float]  # the run's own hyper-parameter values
    predicted_active: int  # active modes the theory predicts at the run's own point


def what_to_change(theory: xr.Dataset, sites: list[str]) -> list[ChangeTable]:
    """One :class:`ChangeTable` per latent site the theory covers (empty when it covers none).

    Parameters
    ----------
    theory
        The ``theory`` group: ``theta`` over ``mode`` and attrs ``model``, the hyper-parameters.
    sites
        The run's latent sites, in order (one for a VAE / CVAE, ``z1 z2`` for an MHVAE).

    Raises
    ------
    ValueError
        The theory's model has no threshold form here (fixed encoder variance).
    """
    model = str(theory.attrs.get("model", ""))
    attrs = theory.attrs
    if model in ("linear_vae", "linear_cvae"):
        if attrs.get("encoder_variance", "learnable") != "learnable":
            raise ValueError("thresholds are derived for a learnable encoder variance; this run fixes it "
                             "(a fixed variance gives partial collapse only)")
        theta = theory["theta"].values
        table = thresholds_from_spectrum(theta, model=model.removeprefix("linear_"), beta=float(attrs["beta"]),
                                         eta_dec=float(attrs["eta_dec"]))
        active = int(theta.size - int(np.sum(theory["collapsed"].values)))
        current = {"beta": float(attrs["beta"]), "eta_dec": float(attrs["eta_dec"])}
        return [ChangeTable(sites[0] if sites else "z", table, SINGLE_COLUMNS, current, active)]
    if model == "linear_mhvae":
        if attrs.get("z2_variance") != "learnable":
            raise ValueError("MHVAE thresholds are derived for Theorem 3 (learnable z2 variance); this run fixes it")
        dims = (int(attrs["latent_dim_z1"]), int(attrs["latent_dim_z2"]))
        hyper = {name: float(attrs[name]) for name in ("beta1", "beta2", "eta_dec", "sigma1")}
        table = mhvae_thresholds_from_spectrum(theory["theta"].values, dims, **hyper)
        tables = []
        for level, site in zip(("z1", "z2"), sites if len(sites) == 2 else ("z1", "z2")):
            in_level = theory[f"in_{level}"].values
            active = int(np.sum(in_level & ~theory[f"{level}_collapsed"].values))
            keep = table.n_active.values <= dims[0 if level == "z1" else 1]
            tables.append(ChangeTable(site, table.isel(n_active=keep), MHVAE_COLUMNS[level], hyper, active))
        return tables
    raise ValueError(f"no threshold form for theory model {model!r}")


def rows_to_show(n_max: int, current: int, limit: int = 12) -> list[int]:
    """The k = 1..n_max rows of a change table worth showing: all when few, else the ends and around the run."""
    if n_max <= limit:
        return list(range(1, n_max + 1))
    wanted = {1, 2, 3, n_max, *range(max(1, current - 2), min(n_max, current + 3) + 1)}
    wanted |= set(np.linspace(1, n_max, 6).round().astype(int).tolist())
    return sorted(k for k in wanted if 1 <= k <= n_max)


def format_limit(value: float, relation: str) -> str:
    """A threshold as the page shows it: a number, 'any value' (no limit) or 'none' (no value can)."""
    if np.isnan(value):
        return "-"
    if np.isinf(value):
        return "any value"
    if value == 0.0 and relation == "<=":
        return "none can"
    return f"{relation} {value:.3g}"


def predicted_kl(theory: xr.Dataset, sites: list[str]) -> xr.Dataset:
    """The theory's per-mode KL at the optimum (nats, without beta) and active-mode count per latent site.

    For the linear VAE / CVAE the optimal encoder has, along mode i, a mean
    with second moment ``encoder_sv_i^2`` and std ``encoder_std_i``, so
    KL_i = ((lambda_i^2 + s_i^2) / eta_enc^2 - log(s_i^2 / eta_enc^2) - 1) / 2;
    a collapsed mode has lambda_i = 0 and s_i = eta_enc, KL 0.  For the MHVAE
    see :func:`mhvae_mode_kl`.

    Returns
    -------
    xr.Dataset with ``<site>_kl`` over ``<site>_rank`` and ``<site>_n_active`` (int).
    """
    model = str(theory.attrs.get("model", ""))
    out = xr.Dataset(attrs={"prediction": str(theory.attrs.get("prediction", ""))})
    if model in ("linear_vae", "linear_cvae"):
        site = sites[0] if sites else "z"
        eta_enc = float(theory.attrs["eta_enc"])
        mean_sq, var = theory["encoder_sv"].values ** 2, theory["encoder_std"].values ** 2
        kl = 0.5 * ((mean_sq + var) / eta_enc**2 - np.log(var / eta_enc**2) - 1.0)
        out[f"{site}_kl"] = (f"{site}_rank", np.sort(kl)[::-1], {"units": "nats"})
        out[f"{site}_n_active"] = int(kl.size - int(theory["collapsed"].values.sum()))
    elif model == "linear_mhvae":
        kls = mhvae_mode_kl(theory)
        for level, site in zip(("z1", "z2"), sites if len(sites) == 2 else ("z1", "z2")):
            in_level = theory[f"in_{level}"].values
            out[f"{site}_kl"] = (f"{site}_rank", np.sort(kls[level][in_level])[::-1], {"units": "nats"})
            out[f"{site}_n_active"] = int(np.sum(in_level & ~theory[f"{level}_collapsed"].values))
    return out


def mhvae_mode_kl(theory: xr.Dataset) -> dict[str, np.ndarray]:
    """Per-mode expected KL of the linear MHVAE's optimum (nats, without beta), ``{'z1': (n,), 'z2': (n,)}``.

    Along mode i the optimum is diagonal: E[(W1 x)_i^2] = lambda_i^2, z1_i = m1_i + sigma1 e1,
    the z2 encoder gain is g_i = beta1 omega_i / (beta1 omega_i^2 + beta2 c^2) (c = eta_dec / eta_enc)
    and z2_i = g_i z1_i + s2_i e2.  Then

    - z2: KL(q(z2_i | z1) || N(0, eta_enc^2)) averaged over z1:
      ((g^2 (lambda^2 + sigma1^2) + s2^2) / eta_enc^2 - log(s2^2 / eta_enc^2) - 1) / 2;
    - z1: KL(q(z1_i | x) || p(z1_i | z2)) averaged over z2 ~ q(z2 | z1), whose mean square gap is
      (1 - omega g)^2 lambda^2 + omega^2 (g^2 sigma1^2 + s2^2):
      ((sigma1^2 + gap) / eta_dec^2 - log(sigma1^2 / eta_dec^2) - 1) / 2.

    Modes outside a level are NaN for it (a z1 mode without a z2 partner has omega = 0).
    """
    attrs = theory.attrs
    beta1, beta2 = float(attrs["beta1"]), float(attrs["beta2"])
    eta_enc, eta_dec, sigma1 = float(attrs["eta_enc"]), float(attrs["eta_dec"]), float(attrs["sigma1"])
    in_z1, in_z2 = theory["in_z1"].values, theory["in_z2"].values
    lam = np.where(in_z1, np.nan_to_num(theory["z1_encoder_sv"].values), 0.0)
    omega = np.where(in_z1 & in_z2, np.nan_to_num(theory["z2_decoder_sv"].values), 0.0)
    if "z2_encoder_std" in theory:
        s2 = np.nan_to_num(theory["z2_encoder_std"].values, nan=eta_enc)
    else:
        s2 = np.full(lam.shape, float(attrs["sigma2"]))
    c = eta_dec / eta_enc
    gain = beta1 * omega / (beta1 * omega**2 + beta2 * c**2)
    z2 = 0.5 * ((gain**2 * (lam**2 + sigma1**2) + s2**2) / eta_enc**2 - np.log(s2**2 / eta_enc**2) - 1.0)
    gap = (1.0 - omega * gain) ** 2 * lam**2 + omega**2 * (gain**2 * sigma1**2 + s2**2)
    z1 = 0.5 * ((sigma1**2 + gap) / eta_dec**2 - np.log(sigma1**2 / eta_dec**2) - 1.0)
    return {"z1": np.where(in_z1, z1, np.nan), "z2": np.where(in_z2, z2, np.nan)}
