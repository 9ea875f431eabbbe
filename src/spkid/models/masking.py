"""Padding masks and padding-aware normalisation."""

import torch


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
    statistics are updated from them as BatchNorm1d would.

    Args:
        bn: the BatchNorm1d over C channels.
        x: (..., C) channels-last input, e.g. (T, B, C).
        pad: x's shape without C, True at padded frames.
    """
    if not bn.training:
        mean, var = bn.running_mean, bn.running_var
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
