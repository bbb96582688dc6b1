"""Independent numerical check of the closed forms: minimise the exact expected loss.

For each linear model the expected negative beta-ELBO over the data
distribution depends on the data only through its second moments, so it is an
analytic function of the parameter matrices and the moment matrices (written
out below, constants included, per data point).  The public ``*_expected_loss``
functions are written in torch (float64) so they can be differentiated and
reused; the minimisers use NumPy twins with hand-derived gradients (tested
against torch autograd, about 50x faster on these tiny problems) and SciPy's
L-BFGS-B from several seeded random starts, keeping the best.  No closed-form
result is used: these minimisers are what the closed forms in
:mod:`ppl_vae.theory.closed_form` are tested against.

Results are returned as :class:`xarray.Dataset` objects in the theory's
coordinates but in *rank order*: along ``rank``, singular values descending
and encoder stds ascending (the optimiser's latent axes carry no mode labels).
The best loss and the spread of the restarts' losses are in ``attrs``.
Keep problems small (d <= 10): every evaluation is a handful of dense products.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import xarray as xr
from threadpoolctl import threadpool_limits

from ppl_vae._validate import check_int_range, check_positive, check_positive_seq
from ppl_vae.theory.free_bits import check_free_bits
from ppl_vae.theory.moments import as_data_matrix, as_paired_data, psd_sqrt, residual_moment_from_blocks

_LOG_2PI = math.log(2.0 * math.pi)


def _t(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def _gaussian_kl_per_dim(mean_second_moment_diag, std, prior_std) -> torch.Tensor:
    """Per latent dimension, E_x KL(N(m_j(x), std_j^2) || N(0, prior_std^2)) given diag E[m m^T]; shape (k,)."""
    variance = std**2
    return 0.5 * ((mean_second_moment_diag + variance) / prior_std**2 - torch.log(variance / prior_std**2) - 1.0)


def _gaussian_kl_to_isotropic(mean_second_moment_diag, std, prior_std) -> torch.Tensor:
    """E_x KL(N(m(x), diag std^2) || N(0, prior_std^2 I)) given diag E[m m^T]."""
    return torch.sum(_gaussian_kl_per_dim(mean_second_moment_diag, std, prior_std))


def _kl_term(mean_second_moment_diag, std, prior_std, free_bits: float) -> torch.Tensor:
    """sum_j max(free_bits, KL_j): the free-bits KL term (population version); the plain sum when free_bits is 0."""
    if free_bits == 0:
        return _gaussian_kl_to_isotropic(mean_second_moment_diag, std, prior_std)
    per_dim = _gaussian_kl_per_dim(mean_second_moment_diag, std, prior_std)
    return torch.sum(torch.clamp(per_dim, min=free_bits))


def vae_expected_loss(decoder, encoder, encoder_std, moment, *, beta, eta_enc, eta_dec,
                      free_bits: float = 0.0) -> torch.Tensor:
    """Expected negative beta-ELBO of the linear VAE, per data point.

    Parameters
    ----------
    decoder : (d, k) U;  encoder : (k, d) W;  encoder_std : (k,) sqrt(diag Sigma)
    moment : (d, d) A = E[x x^T]
    free_bits : float >= 0
        Floor (nats) on each latent dimension's data-averaged KL: the KL term
        becomes sum_j max(free_bits, KL_j) (population free bits).
    """
    decoder, encoder, encoder_std, moment = map(_t, (decoder, encoder, encoder_std, moment))
    latent_moment = encoder @ moment @ encoder.T + torch.diag(encoder_std**2)  # E[z z^T]
    squared_error = (torch.trace(moment) - 2.0 * torch.trace(decoder @ encoder @ moment)
                     + torch.trace(decoder.T @ decoder @ latent_moment))
    reconstruction = 0.5 * moment.shape[0] * (_LOG_2PI + 2.0 * math.log(eta_dec)) + squared_error / (2 * eta_dec**2)
    kl = _kl_term(torch.diagonal(encoder @ moment @ encoder.T), encoder_std, eta_enc, free_bits)
    return reconstruction + beta * kl


def cvae_expected_loss(decoder_z, decoder_x, encoder_x, encoder_y, encoder_std, moment_xx, moment_yx, moment_yy,
                       *, beta, eta_enc, eta_dec, free_bits: float = 0.0) -> torch.Tensor:
    """Expected negative beta-ELBO of the linear CVAE, per data point.

    Decoder mean U1 z + U2 x (``decoder_z`` (d_y, k), ``decoder_x`` (d_y, d_x));
    encoder mean W1 x + W2 y (``encoder_x`` (k, d_x), ``encoder_y`` (k, d_y)),
    ``encoder_std`` (k,); moments E[xx^T], E[yx^T], E[yy^T].  ``free_bits`` as in
    :func:`vae_expected_loss`.
    """
    tensors = map(_t, (decoder_z, decoder_x, encoder_x, encoder_y, encoder_std, moment_xx, moment_yx, moment_yy))
    decoder_z, decoder_x, encoder_x, encoder_y, encoder_std, moment_xx, moment_yx, moment_yy = tensors
    joint = torch.cat([torch.cat([moment_xx, moment_yx.T], 1), torch.cat([moment_yx, moment_yy], 1)], 0)
    encoder = torch.cat([encoder_x, encoder_y], 1)
    identity_y = torch.eye(moment_yy.shape[0], dtype=torch.float64)
    # y - decoder mean at the encoder mean, as a linear map of v = [x; y].
    residual_map = torch.cat([-(decoder_z @ encoder_x + decoder_x), identity_y - decoder_z @ encoder_y], 1)
    squared_error = (torch.trace(residual_map @ joint @ residual_map.T)
                     + torch.trace(decoder_z @ torch.diag(encoder_std**2) @ decoder_z.T))
    reconstruction = 0.5 * moment_yy.shape[0] * (_LOG_2PI + 2.0 * math.log(eta_dec)) + squared_error / (2 * eta_dec**2)
    kl = _kl_term(torch.diagonal(encoder @ joint @ encoder.T), encoder_std, eta_enc, free_bits)
    return reconstruction + beta * kl


def mhvae_expected_loss(decoder1, decoder2, encoder1, encoder2, z2_std, moment, *, beta1, beta2, eta_enc, eta_dec,
                        sigma1) -> torch.Tensor:
    """Expected loss of the linear two-level MHVAE (SPEC 2.3), per data point.

    ``decoder1`` (d, d1) U1, ``decoder2`` (d1, d2) U2, ``encoder1`` (d1, d) W1,
    ``encoder2`` (d2, d1) W2, ``z2_std`` (d2,), ``moment`` (d, d) E[x x^T];
    q(z1|x) has the fixed std ``sigma1``.
    Loss = E[-log p(x|z1)] + beta1 E[log q(z1|x) - log p(z1|z2)] + beta2 E[KL(q(z2|z1) || p(z2))].
    """
    decoder1, decoder2, encoder1, encoder2, z2_std, moment = map(
        _t, (decoder1, decoder2, encoder1, encoder2, z2_std, moment))
    d, d1 = decoder1.shape
    z1_moment = encoder1 @ moment @ encoder1.T + sigma1**2 * torch.eye(d1, dtype=torch.float64)  # E[z1 z1^T]
    squared_error = (torch.trace(moment) - 2.0 * torch.trace(decoder1 @ encoder1 @ moment)
                     + torch.trace(decoder1.T @ decoder1 @ z1_moment))
    reconstruction = 0.5 * d * (_LOG_2PI + 2.0 * math.log(eta_dec)) + squared_error / (2 * eta_dec**2)
    # z1 - U2 z2 = (I - U2 W2) z1 - U2 eps2
    z1_residual = torch.eye(d1, dtype=torch.float64) - decoder2 @ encoder2
    z1_error = (torch.trace(z1_residual @ z1_moment @ z1_residual.T)
                + torch.trace(decoder2 @ torch.diag(z2_std**2) @ decoder2.T))
    neg_entropy_z1 = -0.5 * d1 * (_LOG_2PI + 2.0 * math.log(sigma1) + 1.0)
    neg_log_p_z1 = 0.5 * d1 * (_LOG_2PI + 2.0 * math.log(eta_dec)) + z1_error / (2 * eta_dec**2)
    kl_z2 = _gaussian_kl_to_isotropic(torch.diagonal(encoder2 @ z1_moment @ encoder2.T), z2_std, eta_enc)
    return reconstruction + beta1 * (neg_entropy_z1 + neg_log_p_z1) + beta2 * kl_z2


def _vae_value_and_grad(p, moment, fixed_log_std, *, beta, eta_enc, eta_dec):
    """NumPy value and analytic gradient of :func:`vae_expected_loss` (stds as logs)."""
    decoder, encoder = p["decoder"], p["encoder"]
    log_std = p["log_std"] if fixed_log_std is None else fixed_log_std
    variance = np.exp(2.0 * log_std)
    encoder_moment = encoder @ moment
    latent_moment = encoder_moment @ encoder.T + np.diag(variance)
    gram = decoder.T @ decoder
    value = (0.5 * moment.shape[0] * (_LOG_2PI + 2.0 * math.log(eta_dec))
             + (np.trace(moment) - 2.0 * np.sum(decoder * encoder_moment.T) + np.sum(gram * latent_moment))
             / (2 * eta_dec**2)
             + 0.5 * beta * np.sum((np.diag(latent_moment)) / eta_enc**2 - 2.0 * (log_std - math.log(eta_enc)) - 1.0))
    grads = {
        "decoder": (decoder @ latent_moment - encoder_moment.T) / eta_dec**2,
        "encoder": (gram @ encoder_moment - decoder.T @ moment) / eta_dec**2 + beta * encoder_moment / eta_enc**2,
    }
    if fixed_log_std is None:
        grads["log_std"] = np.diag(gram) * variance / eta_dec**2 + beta * (variance / eta_enc**2 - 1.0)
    return value, grads


def _cvae_value_and_grad(p, joint, dim_x, *, beta, eta_enc, eta_dec):
    """NumPy value and analytic gradient of :func:`cvae_expected_loss` (``joint`` = E[v v^T], v = [x; y])."""
    decoder_z, decoder_x, encoder_x, encoder_y = p["decoder_z"], p["decoder_x"], p["encoder_x"], p["encoder_y"]
    variance = np.exp(2.0 * p["log_std"])
    dim_y = decoder_z.shape[0]
    residual_map = np.hstack([-(decoder_z @ encoder_x + decoder_x), np.eye(dim_y) - decoder_z @ encoder_y])
    encoder = np.hstack([encoder_x, encoder_y])
    residual_joint, encoder_joint = residual_map @ joint, encoder @ joint
    gram = decoder_z.T @ decoder_z
    value = (0.5 * dim_y * (_LOG_2PI + 2.0 * math.log(eta_dec))
             + (np.sum(residual_joint * residual_map) + np.sum(np.diag(gram) * variance)) / (2 * eta_dec**2)
             + 0.5 * beta * np.sum((np.sum(encoder_joint * encoder, 1) + variance) / eta_enc**2
                                   - 2.0 * (p["log_std"] - math.log(eta_enc)) - 1.0))
    d_residual = residual_joint / eta_dec**2
    d_res_x, d_res_y = d_residual[:, :dim_x], d_residual[:, dim_x:]
    d_encoder = beta * encoder_joint / eta_enc**2
    grads = {
        "decoder_z": -d_res_x @ encoder_x.T - d_res_y @ encoder_y.T + decoder_z * variance / eta_dec**2,
        "decoder_x": -d_res_x,
        "encoder_x": -decoder_z.T @ d_res_x + d_encoder[:, :dim_x],
        "encoder_y": -decoder_z.T @ d_res_y + d_encoder[:, dim_x:],
        "log_std": np.diag(gram) * variance / eta_dec**2 + beta * (variance / eta_enc**2 - 1.0),
    }
    return value, grads


def _mhvae_value_and_grad(p, moment, fixed_log_std, *, beta1, beta2, eta_enc, eta_dec, sigma1):
    """NumPy value and analytic gradient of :func:`mhvae_expected_loss` (z2 stds as logs)."""
    decoder1, decoder2, encoder1, encoder2 = p["decoder1"], p["decoder2"], p["encoder1"], p["encoder2"]
    log_std = p["log_std"] if fixed_log_std is None else fixed_log_std
    variance = np.exp(2.0 * log_std)
    d, d1 = decoder1.shape
    encoder1_moment = encoder1 @ moment
    z1_moment = encoder1_moment @ encoder1.T + sigma1**2 * np.eye(d1)
    z1_residual = np.eye(d1) - decoder2 @ encoder2
    gram1, gram2 = decoder1.T @ decoder1, decoder2.T @ decoder2
    encoder2_z1 = encoder2 @ z1_moment
    reconstruction = (0.5 * d * (_LOG_2PI + 2.0 * math.log(eta_dec))
                      + (np.trace(moment) - 2.0 * np.sum(decoder1 * encoder1_moment.T) + np.sum(gram1 * z1_moment))
                      / (2 * eta_dec**2))
    z1_term = (-0.5 * d1 * (_LOG_2PI + 2.0 * math.log(sigma1) + 1.0) + 0.5 * d1 * (_LOG_2PI + 2.0 * math.log(eta_dec))
               + (np.sum((z1_residual @ z1_moment) * z1_residual) + np.sum(np.diag(gram2) * variance))
               / (2 * eta_dec**2))
    kl_z2 = 0.5 * np.sum((np.sum(encoder2_z1 * encoder2, 1) + variance) / eta_enc**2
                         - 2.0 * (log_std - math.log(eta_enc)) - 1.0)
    value = reconstruction + beta1 * z1_term + beta2 * kl_z2
    # Every z1-moment term is tr(G C1) for a symmetric G; C1 = W1 A W1^T + sigma1^2 I.
    d_z1_moment = (gram1 + beta1 * z1_residual.T @ z1_residual) / (2 * eta_dec**2) + beta2 * encoder2.T @ encoder2 / (
        2 * eta_enc**2)
    d_z1_residual = beta1 * z1_residual @ z1_moment / eta_dec**2
    grads = {
        "decoder1": (decoder1 @ z1_moment - encoder1_moment.T) / eta_dec**2,
        "decoder2": -d_z1_residual @ encoder2.T + beta1 * decoder2 * variance / eta_dec**2,
        "encoder1": 2.0 * d_z1_moment @ encoder1_moment - decoder1.T @ moment / eta_dec**2,
        "encoder2": -decoder2.T @ d_z1_residual + beta2 * encoder2_z1 / eta_enc**2,
    }
    if fixed_log_std is None:
        grads["log_std"] = beta1 * np.diag(gram2) * variance / eta_dec**2 + beta2 * (variance / eta_enc**2 - 1.0)
    return value, grads


def minimise(value_and_grad: Callable[[dict[str, np.ndarray]], tuple[float, dict[str, np.ndarray]]],
             shapes: dict[str, tuple[int, ...]], *, n_restarts: int = 5, seed: int = 0, init_scale: float = 0.5,
             max_iterations: int = 20000) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Minimise a loss over float64 parameters of the given shapes with L-BFGS-B, from random starts.

    ``value_and_grad(params)`` returns the loss and a dict of gradients with
    the same keys and shapes.  Starts are ``init_scale`` times standard
    normals drawn from ``numpy.random.default_rng(seed)``.  Returns the best
    parameters and the final loss of every restart.
    """
    names = list(shapes)
    sizes = [int(np.prod(shapes[name])) for name in names]
    splits = np.cumsum(sizes)[:-1]
    generator = np.random.default_rng(seed)

    def unpack(flat: np.ndarray) -> dict[str, np.ndarray]:
        return {name: chunk.reshape(shapes[name]) for name, chunk in zip(names, np.split(flat, splits))}

    def flat_value_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        value, grads = value_and_grad(unpack(flat))
        return float(value), np.concatenate([np.ravel(grads[name]) for name in names])

    from scipy.optimize import minimize  # here, not at the top: SciPy costs a sweep's start-up ~0.5 s

    best_flat, best_value, values = None, np.inf, []
    # The matrices are tiny: a multi-threaded BLAS only adds synchronisation, which costs
    # 10-100x on a busy machine, so run single-threaded.
    with threadpool_limits(limits=1):
        for _ in range(n_restarts):
            start = init_scale * generator.standard_normal(int(sum(sizes)))
            result = minimize(flat_value_and_grad, start, jac=True, method="L-BFGS-B",
                              options={"maxiter": max_iterations, "maxfun": 2 * max_iterations, "maxcor": 30,
                                       "ftol": 1e-16, "gtol": 1e-11})
            values.append(float(result.fun))
            if result.fun < best_value:
                best_flat, best_value = result.x, float(result.fun)
    return unpack(best_flat), np.asarray(values)


def _singular_values(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.svd(matrix, compute_uv=False)


def _rank_dataset(variables: dict[str, np.ndarray], restart_losses: np.ndarray, attrs: dict) -> xr.Dataset:
    """Rank-ordered results: each variable padded with NaN to a common length along ``rank``."""
    length = max(len(values) for values in variables.values())
    data_vars = {}
    for name, values in variables.items():
        padded = np.full(length, np.nan)
        padded[: len(values)] = values
        data_vars[name] = ("rank", padded, {"description": f"{name} in rank order (numeric minimiser)"})
    attrs = dict(attrs, loss=float(restart_losses.min()), restart_loss_spread=float(np.ptp(restart_losses)),
                 n_restarts=len(restart_losses))
    return xr.Dataset(data_vars, coords={"rank": np.arange(length)}, attrs=attrs)


def _descending(values: np.ndarray) -> np.ndarray:
    return np.sort(values)[::-1]


def numeric_linear_vae(x, latent_dim: int, beta: float = 1.0, eta_enc: float = 1.0, eta_dec: float = 1.0,
                       encoder_std: float | Sequence[float] | None = None, *, n_restarts: int = 5,
                       seed: int = 0) -> xr.Dataset:
    """Numerically optimal linear VAE (learnable or fixed encoder std), in rank order.

    Variables along ``rank``: ``decoder_sv`` (singular values of U, descending),
    ``encoder_sv`` (singular values of W A^(1/2) = those of W P diag(phi)^(1/2),
    descending), ``encoder_std`` (ascending; the given stds if fixed).
    """
    x = as_data_matrix("x", x)
    latent_dim = check_int_range("latent_dim", latent_dim, 1, x.shape[1])
    beta, eta_enc, eta_dec = (check_positive(n, v) for n, v in
                              (("beta", beta), ("eta_enc", eta_enc), ("eta_dec", eta_dec)))
    moment = x.T @ x / x.shape[0]
    d = x.shape[1]
    shapes = {"decoder": (d, latent_dim), "encoder": (latent_dim, d)}
    if encoder_std is None:
        shapes["log_std"] = (latent_dim,)
        fixed_log_std = None
    else:
        stds = check_positive_seq("encoder_std", encoder_std)
        if stds.size not in (1, latent_dim):
            raise ValueError(f"encoder_std must be a number or a sequence of latent_dim={latent_dim} numbers, "
                             f"got {stds.size} values")
        fixed_log_std = np.log(np.broadcast_to(stds, (latent_dim,)))

    def value_and_grad(params):
        return _vae_value_and_grad(params, moment, fixed_log_std, beta=beta, eta_enc=eta_enc, eta_dec=eta_dec)

    best, losses = minimise(value_and_grad, shapes, n_restarts=n_restarts, seed=seed)
    log_std = best["log_std"] if fixed_log_std is None else fixed_log_std
    return _rank_dataset({
        "decoder_sv": _singular_values(best["decoder"]),
        "encoder_sv": _singular_values(best["encoder"] @ psd_sqrt(moment)),
        "encoder_std": np.sort(np.exp(log_std)),
    }, losses, {"model": "linear_vae", "encoder_variance": "learnable" if fixed_log_std is None else "fixed"})


def numeric_linear_cvae(x, y, latent_dim: int, beta: float = 1.0, eta_enc: float = 1.0, eta_dec: float = 1.0,
                        *, n_restarts: int = 5, seed: int = 0) -> xr.Dataset:
    """Numerically optimal linear CVAE (learnable encoder std), in rank order.

    Variables along ``rank``: ``decoder_sv`` (of U1), ``encoder_sv`` (of W2 E^(1/2),
    E the residual moment), ``encoder_std`` (ascending).
    """
    x, y = as_paired_data(x, y)
    latent_dim = check_int_range("latent_dim", latent_dim, 1, y.shape[1])
    beta, eta_enc, eta_dec = (check_positive(n, v) for n, v in
                              (("beta", beta), ("eta_enc", eta_enc), ("eta_dec", eta_dec)))
    joint_data = np.hstack([x, y])
    joint = joint_data.T @ joint_data / x.shape[0]
    dx, dy = x.shape[1], y.shape[1]
    shapes = {"decoder_z": (dy, latent_dim), "decoder_x": (dy, dx), "encoder_x": (latent_dim, dx),
              "encoder_y": (latent_dim, dy), "log_std": (latent_dim,)}

    def value_and_grad(params):
        return _cvae_value_and_grad(params, joint, dx, beta=beta, eta_enc=eta_enc, eta_dec=eta_dec)

    best, losses = minimise(value_and_grad, shapes, n_restarts=n_restarts, seed=seed)
    residual = residual_moment_from_blocks(joint[:dx, :dx], joint[dx:, :dx], joint[dx:, dx:])
    return _rank_dataset({
        "decoder_sv": _singular_values(best["decoder_z"]),
        "encoder_sv": _singular_values(best["encoder_y"] @ psd_sqrt(residual)),
        "encoder_std": np.sort(np.exp(best["log_std"])),
    }, losses, {"model": "linear_cvae", "encoder_variance": "learnable"})


def numeric_linear_mhvae(x, latent_dims: tuple[int, int], beta1: float = 1.0, beta2: float = 1.0,
                         eta_enc: float = 1.0, eta_dec: float = 1.0, sigma1: float = 1.0,
                         sigma2: float | None = None, *, n_restarts: int = 5, seed: int = 0) -> xr.Dataset:
    """Numerically optimal linear MHVAE (Sigma2 learnable if ``sigma2`` is None), in rank order.

    Variables along ``rank``: ``z1_encoder_sv`` (of W1 A^(1/2), d1 values),
    ``z2_decoder_sv`` (of U2, min(d1, d2) values), and for learnable Sigma2
    ``z2_encoder_std`` (d2 values, ascending); shorter variables are NaN-padded.
    """
    x = as_data_matrix("x", x)
    d1 = check_int_range("latent_dims[0]", latent_dims[0], 1, x.shape[1])
    d2 = check_int_range("latent_dims[1]", latent_dims[1], 1)
    beta1, beta2, eta_enc, eta_dec, sigma1 = (
        check_positive(n, v) for n, v in (("beta1", beta1), ("beta2", beta2), ("eta_enc", eta_enc),
                                          ("eta_dec", eta_dec), ("sigma1", sigma1)))
    fixed_log_std = None if sigma2 is None else np.full(d2, math.log(check_positive("sigma2", sigma2)))
    moment = x.T @ x / x.shape[0]
    d = x.shape[1]
    shapes = {"decoder1": (d, d1), "decoder2": (d1, d2), "encoder1": (d1, d), "encoder2": (d2, d1)}
    if fixed_log_std is None:
        shapes["log_std"] = (d2,)

    def value_and_grad(params):
        return _mhvae_value_and_grad(params, moment, fixed_log_std, beta1=beta1, beta2=beta2, eta_enc=eta_enc,
                                     eta_dec=eta_dec, sigma1=sigma1)

    best, losses = minimise(value_and_grad, shapes, n_restarts=n_restarts, seed=seed)
    variables = {
        "z1_encoder_sv": _singular_values(best["encoder1"] @ psd_sqrt(moment)),
        "z2_decoder_sv": _singular_values(best["decoder2"]),
    }
    if fixed_log_std is None:
        variables["z2_encoder_std"] = np.sort(np.exp(best["log_std"]))
    return _rank_dataset(variables, losses, {"model": "linear_mhvae",
                                             "z2_variance": "learnable" if fixed_log_std is None else "fixed"})


# --- Free bits (population version): min recon + beta sum_j max(tau, KL_j) -------------------------------
# max() makes the loss non-smooth, and L-BFGS stalls at the kink.  The epigraph form
#     min recon(p) + beta sum_j t_j   s.t.  t_j >= tau,  t_j >= KL_j(p)
# has the same minimisers and only smooth pieces, so SLSQP solves it to round-off.


def _vae_kl_per_dim_and_jacobian(p, moment, *, eta_enc):
    """Per-dimension expected KL (k,) of the linear VAE and its Jacobian ``{name: (k, *shape)}``."""
    encoder, log_std = p["encoder"], p["log_std"]
    encoder_moment = encoder @ moment
    variance = np.exp(2.0 * log_std)
    k = encoder.shape[0]
    kl = 0.5 * ((np.sum(encoder_moment * encoder, 1) + variance) / eta_enc**2
                - 2.0 * (log_std - math.log(eta_enc)) - 1.0)
    d_encoder = np.zeros((k,) + encoder.shape)
    d_encoder[np.arange(k), np.arange(k)] = encoder_moment / eta_enc**2  # KL_j depends on row j only
    jacobian = {"decoder": np.zeros((k,) + p["decoder"].shape), "encoder": d_encoder,
                "log_std": np.diag(variance / eta_enc**2 - 1.0)}
    return kl, jacobian


def _cvae_kl_per_dim_and_jacobian(p, joint, dim_x, *, eta_enc):
    """Per-dimension expected KL (k,) of the linear CVAE and its Jacobian ``{name: (k, *shape)}``."""
    encoder = np.hstack([p["encoder_x"], p["encoder_y"]])
    encoder_joint = encoder @ joint
    variance = np.exp(2.0 * p["log_std"])
    k = encoder.shape[0]
    kl = 0.5 * ((np.sum(encoder_joint * encoder, 1) + variance) / eta_enc**2
                - 2.0 * (p["log_std"] - math.log(eta_enc)) - 1.0)
    d_encoder = np.zeros((k,) + encoder.shape)
    d_encoder[np.arange(k), np.arange(k)] = encoder_joint / eta_enc**2
    jacobian = {name: np.zeros((k,) + p[name].shape) for name in ("decoder_z", "decoder_x")}
    jacobian.update(encoder_x=d_encoder[:, :, :dim_x], encoder_y=d_encoder[:, :, dim_x:],
                    log_std=np.diag(variance / eta_enc**2 - 1.0))
    return kl, jacobian


def minimise_with_kl_floor(reconstruction: Callable, kl_per_dim: Callable, shapes: dict[str, tuple[int, ...]], *,
                           beta: float, free_bits: float, n_restarts: int = 8, seed: int = 0, init_scale: float = 0.5,
                           max_iterations: int = 3000) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Minimise ``reconstruction(p) + beta * sum_j max(free_bits, KL_j(p))`` by SLSQP on its epigraph form.

    ``reconstruction(p)`` returns (value, grads); ``kl_per_dim(p)`` returns (kl of
    shape (k,), Jacobian dict with a leading k axis).  Starts are ``init_scale``
    standard normals from ``numpy.random.default_rng(seed)``.  Returns the best
    parameters and every restart's final (true, non-smooth) loss.
    """
    names = list(shapes)
    sizes = [int(np.prod(shapes[name])) for name in names]
    splits = np.cumsum(sizes)[:-1]
    n_params = int(sum(sizes))
    generator = np.random.default_rng(seed)

    def unpack(flat):
        return {name: chunk.reshape(shapes[name]) for name, chunk in zip(names, np.split(flat[:n_params], splits))}

    def objective(flat):
        value, grads = reconstruction(unpack(flat))
        k = len(flat) - n_params
        return float(value + beta * np.sum(flat[n_params:])), np.concatenate(
            [np.ravel(grads[name]) for name in names] + [np.full(k, beta)])

    def kl_gap(flat):  # t_j - KL_j(p) >= 0
        kl, _ = kl_per_dim(unpack(flat))
        return flat[n_params:] - kl

    def kl_gap_jacobian(flat):
        kl, jacobian = kl_per_dim(unpack(flat))
        k = len(kl)
        return np.hstack([-np.concatenate([jacobian[name].reshape(k, -1) for name in names], 1), np.eye(k)])

    def true_loss(flat):
        params = unpack(flat)
        kl, _ = kl_per_dim(params)
        return float(reconstruction(params)[0] + beta * np.sum(np.maximum(free_bits, kl)))

    from scipy.optimize import minimize  # imported when used (see above)

    best_flat, best_value, values = None, np.inf, []
    with threadpool_limits(limits=1):
        for _ in range(n_restarts):
            start = init_scale * generator.standard_normal(n_params)
            kl_start, _ = kl_per_dim(unpack(start))
            flat = np.concatenate([start, np.maximum(free_bits, kl_start) + 0.1])  # a feasible start
            k = len(kl_start)
            # t_j >= free_bits as bounds; t_j >= KL_j as smooth inequality constraints.
            bounds = [(None, None)] * n_params + [(free_bits, None)] * k
            result = minimize(objective, flat, jac=True, method="SLSQP", bounds=bounds,
                              constraints=[{"type": "ineq", "fun": kl_gap, "jac": kl_gap_jacobian}],
                              options={"maxiter": max_iterations, "ftol": 1e-15})
            value = true_loss(result.x)  # the epigraph value can sit a hair above it
            values.append(value)
            if value < best_value:
                best_flat, best_value = result.x, value
    return unpack(best_flat), np.asarray(values)


def _checked_free_bits_hyper(beta, eta_enc, eta_dec, free_bits) -> tuple[float, float, float, float]:
    """(beta, eta_enc, eta_dec) > 0 and free_bits >= 0 as floats, else ValueError naming the parameter."""
    checked = tuple(check_positive(n, v) for n, v in (("beta", beta), ("eta_enc", eta_enc), ("eta_dec", eta_dec)))
    return checked + (check_free_bits(free_bits),)


def numeric_linear_vae_free_bits(x, latent_dim: int, beta: float = 1.0, eta_enc: float = 1.0, eta_dec: float = 1.0,
                                 free_bits: float = 0.0, *, n_restarts: int = 8, seed: int = 0) -> xr.Dataset:
    """Numerically optimal linear VAE (learnable std, full matrices) under population free bits, in rank order.

    Variables along ``rank``: ``decoder_sv``, ``encoder_sv`` (of W A^(1/2)), ``kl``
    (per latent dimension, nats, descending) and ``encoder_std`` (ascending).
    ``attrs["loss"]``: the best expected free-bits loss per data point.
    """
    x = as_data_matrix("x", x)
    latent_dim = check_int_range("latent_dim", latent_dim, 1, x.shape[1])
    beta, eta_enc, eta_dec, free_bits = _checked_free_bits_hyper(beta, eta_enc, eta_dec, free_bits)
    moment = x.T @ x / x.shape[0]
    d = x.shape[1]
    shapes = {"decoder": (d, latent_dim), "encoder": (latent_dim, d), "log_std": (latent_dim,)}
    best, losses = minimise_with_kl_floor(
        lambda p: _vae_value_and_grad(p, moment, None, beta=0.0, eta_enc=eta_enc, eta_dec=eta_dec),
        lambda p: _vae_kl_per_dim_and_jacobian(p, moment, eta_enc=eta_enc), shapes, beta=beta, free_bits=free_bits,
        n_restarts=n_restarts, seed=seed)
    kl, _ = _vae_kl_per_dim_and_jacobian(best, moment, eta_enc=eta_enc)
    return _rank_dataset({
        "decoder_sv": _singular_values(best["decoder"]),
        "encoder_sv": _singular_values(best["encoder"] @ psd_sqrt(moment)),
        "encoder_std": np.sort(np.exp(best["log_std"])),
        "kl": _descending(kl),
    }, losses, {"model": "linear_vae", "encoder_variance": "learnable", "free_bits": free_bits})


def numeric_linear_cvae_free_bits(x, y, latent_dim: int, beta: float = 1.0, eta_enc: float = 1.0,
                                  eta_dec: float = 1.0, free_bits: float = 0.0, *, n_restarts: int = 8,
                                  seed: int = 0) -> xr.Dataset:
    """Numerically optimal linear CVAE (full matrices) under population free bits, in rank order.

    Variables as :func:`numeric_linear_cvae` plus ``kl`` (nats, descending);
    ``attrs["loss"]``: the best expected free-bits loss per data point.
    """
    x, y = as_paired_data(x, y)
    latent_dim = check_int_range("latent_dim", latent_dim, 1, y.shape[1])
    beta, eta_enc, eta_dec, free_bits = _checked_free_bits_hyper(beta, eta_enc, eta_dec, free_bits)
    joint_data = np.hstack([x, y])
    joint = joint_data.T @ joint_data / x.shape[0]
    dx, dy = x.shape[1], y.shape[1]
    shapes = {"decoder_z": (dy, latent_dim), "decoder_x": (dy, dx), "encoder_x": (latent_dim, dx),
              "encoder_y": (latent_dim, dy), "log_std": (latent_dim,)}
    best, losses = minimise_with_kl_floor(
        lambda p: _cvae_value_and_grad(p, joint, dx, beta=0.0, eta_enc=eta_enc, eta_dec=eta_dec),
        lambda p: _cvae_kl_per_dim_and_jacobian(p, joint, dx, eta_enc=eta_enc), shapes, beta=beta,
        free_bits=free_bits, n_restarts=n_restarts, seed=seed)
    residual = residual_moment_from_blocks(joint[:dx, :dx], joint[dx:, :dx], joint[dx:, dx:])
    kl, _ = _cvae_kl_per_dim_and_jacobian(best, joint, dx, eta_enc=eta_enc)
    return _rank_dataset({
        "decoder_sv": _singular_values(best["decoder_z"]),
        "encoder_sv": _singular_values(best["encoder_y"] @ psd_sqrt(residual)),
        "encoder_std": np.sort(np.exp(best["log_std"])),
        "kl": _descending(kl),
    }, losses, {"model": "linear_cvae", "encoder_variance": "learnable", "free_bits": free_bits})
