"""Free bits (Kingma et al. 2016): a per-dimension floor on the KL term.

Per latent dimension ``j`` the batch's KL term ``sum_b KL_bj`` is replaced by
``B * max(lambda, mean_b KL_bj)``: below the floor ``lambda`` (nats) the KL
costs a constant, so the optimiser has no reason to push a dimension's KL under
it, and the dimension is kept "open".  Above the floor the term equals the
ordinary batch sum, so the function drops into an ELBO that sums over the batch.
The linear theory of this objective is in :mod:`ppl_vae.theory.free_bits`.
"""

from __future__ import annotations

import torch


def free_bits_kl(kl_per_dim: torch.Tensor, free_bits, *, validate: bool = True) -> torch.Tensor:
    """Batch-sum-scaled free-bits KL term ``B * sum_j max(lambda, mean_b KL_bj)``.

    Parameters
    ----------
    kl_per_dim : torch.Tensor, shape (..., B, d)
        Analytic KL of each data point's posterior from its prior, per latent
        dimension, in nats, WITHOUT the beta factor (the caller scales).
        Leading dimensions (e.g. K configurations of a sweep) are kept.
    free_bits : float >= 0, or tensor broadcastable to (..., 1, 1)
        The floor lambda in nats per dimension; 0 gives the plain batch sum.
    validate : bool
        Check the floor on the host (a device sync); the training loop passes
        False, its floors were checked when the model config was built.

    Returns
    -------
    torch.Tensor, shape (...): nats, summed over the batch and the latent dimensions.

    Notes
    -----
    The gradient with respect to ``kl_per_dim`` is exactly zero for dimensions
    whose batch mean is below the floor (``torch.maximum`` routes it to the
    constant); at a tie it is split equally between the two branches.
    """
    if not isinstance(kl_per_dim, torch.Tensor) or kl_per_dim.ndim < 2:
        raise ValueError("kl_per_dim must be a tensor of shape (..., B, d) with a batch and a latent dimension, "
                         f"got {getattr(kl_per_dim, 'shape', type(kl_per_dim).__name__)}")
    batch_size = kl_per_dim.shape[-2]
    if batch_size == 0:
        raise ValueError("kl_per_dim must hold at least one data point (B >= 1), got B = 0")
    floor = torch.as_tensor(free_bits, dtype=kl_per_dim.dtype, device=kl_per_dim.device)
    if validate and (not isinstance(free_bits, torch.Tensor) or not free_bits.requires_grad):
        # A host check only where it cannot stall a graph (plain numbers and constant tensors).
        if not bool(torch.all(torch.isfinite(floor) & (floor >= 0))):
            raise ValueError(f"free_bits must be finite and >= 0 (nats per latent dimension), got {free_bits!r}")
    if floor.ndim >= 2:
        floor = floor.squeeze(-1)  # (..., 1, 1) -> (..., 1), matching the batch mean's (..., d)
    mean_kl = kl_per_dim.mean(dim=-2)  # (..., d)
    return batch_size * torch.maximum(mean_kl, floor).sum(dim=-1)
