"""ECAPA-TDNN's encoder (Desplanques et al., 2020; SpeechBrain's ECAPA_TDNN layout): a TDNN
block, SE-Res2Net blocks of growing dilation, and multi-layer feature aggregation. Padded
frames are zeroed before every convolution that reads neighbours and skipped by batch norm
and squeeze-excitation, so padding never changes a result (SpeechBrain pads by reflection)."""

import torch
from torch import nn

from spkid.models.masking import masked_batch_norm, masked_mean, padding_mask

RES2NET_SCALE = 8  # channel groups of each Res2Net convolution
SE_CHANNELS = 128  # squeeze-excitation bottleneck
FIRST_KERNEL = 5  # the first TDNN block's kernel; the Res2Net kernels are 3
RES2NET_KERNEL = 3


class TDNNBlock(nn.Module):
    """Conv1d ('same', zero-padded, dilated) - ReLU - BatchNorm1d.

    Args:
        in_dim, out_dim: channels.
        kernel, dilation: the convolution's.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, dilation=dilation, padding="same")
        self.norm = nn.BatchNorm1d(out_dim)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, in_dim, T), pad (B, T) True at padding -> (B, out_dim, T)."""
        h = torch.relu(self.conv(x.masked_fill(pad[:, None], 0.0)))
        return masked_batch_norm(self.norm, h.transpose(1, 2), pad).transpose(1, 2)


class SEBlock(nn.Module):
    """Squeeze-excitation: channel gates from the mean over valid frames.

    Args:
        dim: channels.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.squeeze = nn.Linear(dim, SE_CHANNELS)
        self.excite = nn.Linear(SE_CHANNELS, dim)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, C, T), pad (B, T) -> (B, C, T)."""
        mean = masked_mean(x.transpose(1, 2), pad)  # (B, C)
        return x * torch.sigmoid(self.excite(torch.relu(self.squeeze(mean))))[..., None]


class SERes2NetBlock(nn.Module):
    """TDNN (kernel 1) - Res2Net (RES2NET_SCALE groups, each fed the previous group's output)
    - TDNN (kernel 1) - squeeze-excitation, plus the input.

    Args:
        dim: channels.
        dilation: of the Res2Net convolutions.
    """

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        group = dim // RES2NET_SCALE
        self.tdnn1 = TDNNBlock(dim, dim)
        self.res2net = nn.ModuleList(
            TDNNBlock(group, group, RES2NET_KERNEL, dilation) for _ in range(RES2NET_SCALE - 1)
        )
        self.tdnn2 = TDNNBlock(dim, dim)
        self.se = SEBlock(dim)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, C, T), pad (B, T) -> (B, C, T)."""
        first, *rest = self.tdnn1(x, pad).chunk(RES2NET_SCALE, dim=1)
        outs = [first]
        for conv, part in zip(self.res2net, rest):
            outs.append(conv(part if len(outs) == 1 else part + outs[-1], pad))
        return x + self.se(self.tdnn2(torch.cat(outs, dim=1), pad), pad)


class EcapaEncoder(nn.Module):
    """ECAPA-TDNN up to its pooling: TDNN (kernel 5), ``layers`` SE-Res2Net blocks with
    dilations 2, 3, ..., and a kernel-1 TDNN over their outputs concatenated.

    Args:
        n_mels: input feature width.
        d_model: channels C (SpeechBrain's 512 or 1024), a multiple of RES2NET_SCALE.
        layers: SE-Res2Net blocks (3); the output has C * layers channels (1536).
    """

    def __init__(self, n_mels: int, d_model: int, layers: int):
        super().__init__()
        self.first = TDNNBlock(n_mels, d_model, FIRST_KERNEL)
        self.blocks = nn.ModuleList(SERes2NetBlock(d_model, i + 2) for i in range(layers))
        self.out_dim = d_model * layers
        self.aggregate = TDNNBlock(self.out_dim, self.out_dim)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        """feats (B, T, n_mels), lengths (B,) -> frames (B, T, C * layers), lengths (B,)."""
        pad = padding_mask(lengths, feats.shape[1])
        x = self.first(feats.transpose(1, 2), pad)  # (B, C, T)
        outs = []
        for block in self.blocks:
            x = block(x, pad)
            outs.append(x)
        return self.aggregate(torch.cat(outs, dim=1), pad).transpose(1, 2), lengths
