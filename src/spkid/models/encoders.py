"""Encoders: ``forward(feats, lengths) -> (frames, lengths)``, padding never changes a result."""

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from spkid.models.masking import masked_batch_norm, padding_mask

STEM_CHANNELS = 32  # ConvStem's channels


class LinearPrenet(nn.Linear):
    """The course sample's prenet, a Linear from n_mels to d_model on every frame.

    Args:
        n_mels: input feature width.
        d_model: output width.
    """

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats (B, T, n_mels), lengths (B,) -> (B, T, d_model)."""
        return super().forward(feats)


class ConvStem(nn.Module):
    """Two 3x3 Conv2d-ReLU over (time, mel), mel stride 2, then a Linear to d_model; time
    resolution is kept and padded frames are zeroed before each convolution.

    Args:
        n_mels: input feature width.
        d_model: output width.
    """

    def __init__(self, n_mels: int, d_model: int):
        super().__init__()
        c = STEM_CHANNELS
        self.conv1 = nn.Conv2d(1, c, 3, stride=(1, 2), padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, stride=(1, 2), padding=1)
        mels = (n_mels + 3) // 4  # mel bins left after two stride-2 convolutions
        self.out = nn.Linear(c * mels, d_model)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats (B, T, n_mels), lengths (B,) -> (B, T, d_model)."""
        pad = padding_mask(lengths, feats.shape[1])[:, None, :, None]  # (B, 1, T, 1)
        h = torch.relu(self.conv1(feats[:, None].masked_fill(pad, 0.0)))  # (B, C, T, n_mels/2)
        h = torch.relu(self.conv2(h.masked_fill(pad, 0.0)))  # (B, C, T, n_mels/4)
        return self.out(h.transpose(1, 2).flatten(2))  # (B, T, C * n_mels/4) -> (B, T, d_model)


PRENETS = {"linear": LinearPrenet, "conv": ConvStem}


class TransformerEncoder(nn.Module):
    """The course sample's encoder: a prenet then post-norm Transformer layers.

    Args:
        n_mels: input feature width.
        d_model: model width.
        layers: number of TransformerEncoderLayers.
        heads: attention heads.
        ffn: feed-forward width.
        dropout: dropout probability.
        prenet: the input layer, linear (default, LinearPrenet) or conv (ConvStem).
    """

    def __init__(
        self,
        n_mels: int,
        d_model: int,
        layers: int,
        heads: int,
        ffn: int,
        dropout: float,
        prenet: str = "linear",
    ):
        super().__init__()
        self.prenet = PRENETS[prenet](n_mels, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out_dim = d_model

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        """feats (B, T, n_mels), lengths (B,) -> frames (B, T, d_model), lengths (B,)."""
        pad = padding_mask(lengths, feats.shape[1])
        return self.layers(self.prenet(feats, lengths), src_key_padding_mask=pad), lengths


class ConformerEncoder(nn.Module):
    """A prenet then torchaudio's Conformer layers, with padding kept out of the
    convolution module (zeroed before the depthwise convolution, skipped by batch norm).

    Args:
        n_mels: input feature width.
        d_model: model width.
        layers: Conformer layers.
        heads: attention heads.
        ffn: feed-forward width.
        dropout: dropout probability.
        kernel: depthwise convolution kernel size (odd).
        aggregate: output every layer's frames concatenated and layer-normalised
            (multi-scale feature aggregation, MFA-Conformer) instead of the last layer's.
        prenet: the input layer, linear (default, LinearPrenet) or conv (ConvStem).
    """

    def __init__(
        self,
        n_mels: int,
        d_model: int,
        layers: int,
        heads: int,
        ffn: int,
        dropout: float,
        kernel: int,
        aggregate: bool = False,
        prenet: str = "linear",
    ):
        super().__init__()
        self.prenet = PRENETS[prenet](n_mels, d_model)
        self.conformer = torchaudio.models.Conformer(
            input_dim=d_model,
            num_heads=heads,
            ffn_dim=ffn,
            num_layers=layers,
            depthwise_conv_kernel_size=kernel,
            dropout=dropout,
        )
        self.aggregate = nn.LayerNorm(d_model * layers) if aggregate else None
        self.out_dim = d_model * layers if aggregate else d_model

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        """feats (B, T, n_mels), lengths (B,) -> frames (B, T, out_dim), lengths (B,)."""
        pad = padding_mask(lengths, feats.shape[1])
        x = self.prenet(feats, lengths).transpose(0, 1)  # (T, B, D)
        outs = []
        for layer in self.conformer.conformer_layers:
            x = _conformer_layer(layer, x, pad)
            outs.append(x)
        if self.aggregate is not None:
            x = self.aggregate(torch.cat(outs, dim=-1))  # (T, B, D * layers)
        return x.transpose(0, 1), lengths


def _conformer_layer(layer, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """torchaudio's ConformerLayer.forward with a padding-aware convolution module.

    x: (T, B, D); pad: (B, T) True at padding.
    """
    x = x + 0.5 * layer.ffn1(x)
    h = layer.self_attn_layer_norm(x)
    h, _ = layer.self_attn(h, h, h, key_padding_mask=pad, need_weights=False)
    x = x + layer.self_attn_dropout(h)
    x = x + _conv_module(layer.conv_module, x, pad)
    x = x + 0.5 * layer.ffn2(x)
    return layer.final_layer_norm(x)


def _conv_module(module, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """torchaudio's ConvolutionModule on channels-last frames: the pointwise convolutions run
    as matmuls, and padded frames are zero where the depthwise kernel reads them.

    x: (T, B, D) -> (T, B, D); pad: (B, T) True at padding.
    """
    pointwise, _, depthwise, norm, act, out, drop = module.sequential
    pad = pad.T  # (T, B)
    h = F.glu(_pointwise(pointwise, module.layer_norm(x)), dim=-1).masked_fill(pad[..., None], 0.0)
    h = masked_batch_norm(norm, depthwise_conv(depthwise, h), pad)
    return drop(_pointwise(out, act(h)))


def _pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 Conv1d applied to channels-last x (..., C_in) -> (..., C_out)."""
    return F.linear(x, conv.weight[:, :, 0], conv.bias)


TOEPLITZ_MAX_FRAMES = 256  # beyond this the (C, T, T) kernel costs more than it saves


def depthwise_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A depthwise 'same' Conv1d on channels-last frames; on CUDA, for crops up to
    TOEPLITZ_MAX_FRAMES frames, computed on tensor cores as one batched matmul.

    x: (T, B, C) -> (T, B, C).
    """
    if not x.is_cuda or x.shape[0] > TOEPLITZ_MAX_FRAMES:
        return conv(x.permute(1, 2, 0)).permute(2, 0, 1)
    return toeplitz_depthwise(x, conv.weight[:, 0, :], conv.bias)


def toeplitz_depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depthwise 'same' cross-correlation as a batched matmul with per-channel Toeplitz
    matrices (PyTorch's native depthwise kernel is slow for long kernels on GPUs).

    Args:
        x: (T, B, C) input.
        weight: (C, K) taps, K odd.
        bias: (C,).

    Returns:
        (T, B, C), equal to ``F.conv1d`` with ``weight[:, None]``, ``padding=K // 2`` and
        ``groups=C`` on ``x`` as (B, C, T).
    """
    taps = weight.shape[1]
    t = torch.arange(x.shape[0], device=x.device)
    tap = t[None, :] - t[:, None] + taps // 2  # (T_out, T_in): which tap links them
    kernel = weight[:, tap.clamp(0, taps - 1)] * ((tap >= 0) & (tap < taps))  # (C, T, T)
    return torch.einsum("cts,sbc->tbc", kernel.to(x.dtype), x) + bias.to(x.dtype)
