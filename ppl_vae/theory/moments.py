"""Data statistics that the linear collapse theory depends on (SPEC section 3).

The linear models have no bias terms, so every statistic here is an
*uncentred* second moment, ``E[x x^T] = x^T x / n``.

Rank-deficient moments (blank MNIST pixels give all-zero columns) are
handled by an eigen-clamp: an eigenvalue ``<= RELATIVE_TOLERANCE(d) * largest``
is treated as an exact zero, where ``RELATIVE_TOLERANCE(d) = d * eps`` (float64
machine epsilon times the matrix size, NumPy's default rank tolerance).  The
same rule defines the pseudo-inverse used for the CVAE's least-squares map.
"""

from __future__ import annotations

import numpy as np

from ppl_vae._validate import check_finite_matrix, check_real, check_theory_cost


def relative_tolerance(dim: int) -> float:
    """Eigenvalues below ``relative_tolerance(dim) * largest`` count as zero (``dim * eps``)."""
    return max(int(dim), 1) * float(np.finfo(np.float64).eps)


def as_data_matrix(name: str, data) -> np.ndarray:
    """Return ``data`` (NumPy array or torch tensor, shape ``(n, d)``) as a float64 NumPy array.

    Raises ``ValueError`` naming ``name`` if the array is not 2-D, is empty or
    holds NaN / inf.
    """
    if hasattr(data, "detach"):  # a torch tensor; avoid importing torch for NumPy users
        data = data.detach().cpu().numpy()
    try:
        check_real(name, np.asarray(data))  # a complex array would lose its imaginary part in the cast below
    except (TypeError, ValueError) as err:
        if "complex" in str(err):
            raise
    if np.ndim(data) == 2:
        check_theory_cost(name, np.shape(data)[1])
    try:
        array = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array of shape (n_samples, n_features)") from None
    return check_finite_matrix(name, array)


def as_paired_data(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (condition ``x``, output ``y``) pair: both 2-D, finite, with the same ``n``."""
    x = as_data_matrix("x", x)
    y = as_data_matrix("y", y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y must have as many samples as x ({x.shape[0]}), got {y.shape[0]}")
    return x, y


def second_moment(x, y=None) -> np.ndarray:
    """Uncentred second moment ``E[x y^T] = x^T y / n``.

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n, d_x)
    y : array_like or torch.Tensor, shape (n, d_y), optional
        Defaults to ``x`` (then the result is symmetric by construction).

    Returns
    -------
    np.ndarray, shape (d_x, d_y), float64
    """
    if y is None:
        x = as_data_matrix("x", x)
        return x.T @ x / x.shape[0]
    x, y = as_paired_data(x, y)
    return x.T @ y / x.shape[0]


def clamped_eigh(moment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD matrix, eigenvalues descending and clamped.

    Eigenvalues below ``relative_tolerance(d) * largest`` (round-off, or
    exactly-zero directions such as blank pixels) are set to exactly 0.

    Returns
    -------
    eigenvalues : np.ndarray, shape (d,), descending, >= 0
    eigenvectors : np.ndarray, shape (d, d), column ``i`` belongs to eigenvalue ``i``
    """
    symmetric = 0.5 * (moment + moment.T)
    eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    cutoff = relative_tolerance(len(eigenvalues)) * max(float(eigenvalues[0]), 0.0)
    eigenvalues = np.where(eigenvalues > cutoff, eigenvalues, 0.0)
    return eigenvalues, eigenvectors


def psd_sqrt(moment: np.ndarray) -> np.ndarray:
    """Symmetric square root ``A^(1/2)`` of a PSD matrix (eigen-clamped), shape (d, d)."""
    eigenvalues, eigenvectors = clamped_eigh(moment)
    return (eigenvectors * np.sqrt(eigenvalues)) @ eigenvectors.T


def psd_pinv(moment: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of a PSD matrix; clamped (near-)zero eigenvalues are left out."""
    eigenvalues, eigenvectors = clamped_eigh(moment)
    inverse = np.divide(1.0, eigenvalues, out=np.zeros_like(eigenvalues), where=eigenvalues > 0)
    return (eigenvectors * inverse) @ eigenvectors.T


def vae_thetas(x) -> np.ndarray:
    """VAE / MHVAE data spectrum ``theta_i = sqrt(phi_i)``, ``phi`` the eigenvalues of ``A = E[x x^T]``.

    ``theta`` are the singular values of ``Z = E[x x~^T] = P diag(phi)^(1/2)``
    (``x~`` the whitened data), so they carry the units of a standard deviation.

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n, d)

    Returns
    -------
    np.ndarray, shape (d,), descending, >= 0
    """
    eigenvalues, _ = clamped_eigh(second_moment(x))
    return np.sqrt(eigenvalues)


def residual_moment_from_blocks(moment_xx: np.ndarray, moment_yx: np.ndarray, moment_yy: np.ndarray) -> np.ndarray:
    """``E = E[y y^T] - E[y x^T] E[x x^T]^+ E[x y^T]`` from the moment blocks, shape (d_y, d_y)."""
    residual = moment_yy - moment_yx @ psd_pinv(moment_xx) @ moment_yx.T
    return 0.5 * (residual + residual.T)


def residual_moment(x, y) -> np.ndarray:
    """CVAE statistic ``E``: second moment of ``r = y - B x``, ``B`` the least-squares map from x to y.

    Parameters
    ----------
    x : array_like or torch.Tensor, shape (n, d_x)   (the condition)
    y : array_like or torch.Tensor, shape (n, d_y)   (the output)

    Returns
    -------
    np.ndarray, shape (d_y, d_y)
    """
    x, y = as_paired_data(x, y)
    n = x.shape[0]
    return residual_moment_from_blocks(x.T @ x / n, y.T @ x / n, y.T @ y / n)


def cvae_thetas_from_residual(residual: np.ndarray, moment_yy: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``E`` (descending), clamped at 0 relative to the scale of ``E[y y^T]``."""
    eigenvalues = np.sort(np.linalg.eigvalsh(residual))[::-1]
    scale = max(float(np.linalg.eigvalsh(moment_yy)[-1]), 0.0)
    cutoff = relative_tolerance(len(eigenvalues)) * scale
    return np.where(eigenvalues > cutoff, eigenvalues, 0.0)


def cvae_thetas(x, y) -> np.ndarray:
    """CVAE data spectrum: eigenvalues ``theta_i`` of ``E`` (see :func:`residual_moment`), descending.

    ``theta`` carries the units of a variance.  Eigenvalues at round-off level
    (``<= d_y * eps * largest eigenvalue of E[y y^T]``) are set to exactly 0, so
    a ``y`` that ``x`` predicts perfectly gives ``theta = 0``.

    Returns
    -------
    np.ndarray, shape (d_y,), descending, >= 0
    """
    x, y = as_paired_data(x, y)
    moment_yy = y.T @ y / y.shape[0]
    return cvae_thetas_from_residual(residual_moment(x, y), moment_yy)
