"""Padding masks and padding-aware normalisation."""

import torch
import torch.nn.functional as F


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """True at padded positions.

    Args:
        lengths: (B,) valid frames per row.
        max_len: T, the padded length.

    Returns:
        (B, T) bool.
    """
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def masked_mean(x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of dimension 1: x (B, T, ...), pad (B, T) -> (B, ...)."""
    valid = (~pad).to(x.dtype).reshape(*pad.shape, *[1] * (x.dim() - 2))
    return (x * valid).sum(1) / valid.sum(1).clamp(min=1)


def masked_batch_norm(bn: torch.nn.BatchNorm1d, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over the last dimension whose training statistics skip padded frames.

    In eval mode this is ``bn`` with its running statistics (a per-frame affine map). In
    training mode the batch mean and variance come from valid frames only, and the running
    statistics are updated from them as BatchNorm1d would. On CPU, a batch without padding
    (training crops) takes BatchNorm's fused kernel: the same statistics, summed in another
    order (equal to about 1e-6).

    Args:
        bn: the BatchNorm1d over C channels.
        x: (..., C) channels-last input, e.g. (T, B, C).
        pad: x's shape without C, True at padded frames.
    """
    if not bn.training:
        mean, var = bn.running_mean, bn.running_var
    elif not x.is_cuda and not pad.any():  # CPU crops without padding: the fused kernel
        flat = F.batch_norm(  # 3-4x faster fwd+bwd than the masked sums at C 64 on CPU
            x.reshape(-1, x.shape[-1]),
            bn.running_mean,
            bn.running_var,
            bn.weight,
            bn.bias,
            True,
            bn.momentum,
            bn.eps,
        )
        bn.num_batches_tracked += 1
        return flat.reshape(x.shape)
    else:
        valid = (~pad)[..., None].to(x.dtype)
        dims = tuple(range(x.dim() - 1))
        count = valid.sum() * 1.0
        mean = (x * valid).sum(dim=dims) / count  # (C,)
        var = (((x - mean) ** 2) * valid).sum(dim=dims) / count
        with torch.no_grad():
            unbiased = var * count / (count - 1).clamp(min=1)
            bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), bn.momentum)
            bn.running_var.lerp_(unbiased.detach().to(bn.running_var.dtype), bn.momentum)
            bn.num_batches_tracked += 1
    return (x - mean) * torch.rsqrt(var + bn.eps) * bn.weight + bn.bias
