"""A tier's network as ONNX: inputs ``feats`` (batch, frames, n_mels) float32 and ``lengths``
(batch,) int64, output ``log_probs`` (batch, speakers); batch and frames are dynamic."""

import torch
from torch import nn

from spkid import checkpoint
from spkid.atomic import atomic_path

INPUTS = ("feats", "lengths")
OUTPUT = "log_probs"
OPSET = 18
EXAMPLE_FRAMES = (64, 40)  # the traced batch's lengths: padded, mixed


class LogProbs(nn.Module):
    """``model``'s log-probabilities: (feats (B, T, M), lengths (B,)) -> (B, C)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(feats, lengths).float().log_softmax(-1)


def export(model: nn.Module, n_mels: int, path) -> None:
    """Write ``model`` (a SpeakerNet, on the CPU) to ``path`` as ONNX, atomically."""
    wrapped = LogProbs(model).eval()
    lengths = torch.tensor(EXAMPLE_FRAMES)
    feats = torch.randn(len(EXAMPLE_FRAMES), max(EXAMPLE_FRAMES), n_mels)
    batch, frames = torch.export.Dim("batch", min=1), torch.export.Dim("frames", min=2)
    with atomic_path(path) as tmp:
        torch.onnx.export(
            wrapped,
            (feats, lengths),
            str(tmp),
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_shapes={"feats": {0: batch, 1: frames}, "lengths": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def export_checkpoint(checkpoint_path, path) -> None:
    """Export the network of a checkpoint file to ``path``."""
    model, ckpt = checkpoint.load_model(checkpoint_path)
    export(model, ckpt["model_args"]["n_mels"], path)
