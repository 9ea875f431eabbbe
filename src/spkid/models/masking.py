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


def masked_batch_norm(bn: torch.nn.BatchNorm1d, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d whose training statistics skip padded frames.

    In eval mode this is ``bn(x)`` (a per-frame affine map). In training mode the batch
    mean and variance come from valid frames only, and the running statistics are
    updated from them as BatchNorm1d would.

    Args:
        bn: the BatchNorm1d over C channels.
        x: (B, C, T) input.
        pad: (B, T) True at padded frames.
    """
    if not bn.training:
        return bn(x)
    valid = (~pad)[:, None, :].to(x.dtype)  # (B, 1, T)
    count = valid.sum() * 1.0
    mean = (x * valid).sum(dim=(0, 2)) / count  # (C,)
    var = (((x - mean[None, :, None]) ** 2) * valid).sum(dim=(0, 2)) / count
    with torch.no_grad():
        unbiased = var * count / (count - 1).clamp(min=1)
        bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), bn.momentum)
        bn.running_var.lerp_(unbiased.detach().to(bn.running_var.dtype), bn.momentum)
        bn.num_batches_tracked += 1
    x = (x - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + bn.eps)
    return x * bn.weight[None, :, None] + bn.bias[None, :, None]
