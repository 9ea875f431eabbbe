"""Data-parallel training through PyTorch's own torchrun and DistributedDataParallel.

A stage asked for ``devices > 1`` re-launches itself under torchrun on this node; under
torchrun already (multi-node: torchrun's --nnodes, --node-rank, --rdzv-endpoint) it runs
as the rank torchrun made it. Rank 0 alone logs and writes.
"""

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Rank:
    """This process's place: global rank, world size and rank on this node."""

    rank: int = 0
    world: int = 1
    local: int = 0


SINGLE = Rank()  # one process, no torchrun


def under_torchrun() -> bool:
    """True inside a torchrun worker."""
    return "LOCAL_RANK" in os.environ


def relaunch(devices: int, module: str, args: list) -> int:
    """Run ``python -m module args`` under torchrun with ``devices`` workers on this node."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={devices}",
        "-m",
        module,
        *args,
    ]
    return subprocess.run(cmd, check=False).returncode


def init(device: str) -> Rank:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs)."""
    if not under_torchrun():
        return Rank()
    use_nccl = device != "cpu" and torch.cuda.is_available()
    if use_nccl:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if use_nccl else "gloo")
    return Rank(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))


def broadcast_flag(flag: bool, device: torch.device, world: int) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


def parameter_digest(model: torch.nn.Module) -> str:
    """A short hash of every parameter's bytes (equal across ranks when DDP kept them in step)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def gather_ranks(step: int, model: torch.nn.Module, world: int) -> list:
    """[{rank, steps, parameters}] from every rank (just this one when world is 1)."""
    mine = {"steps": step, "parameters": parameter_digest(model)}
    if world == 1:
        return [{"rank": 0, **mine}]
    out = [None] * world
    dist.all_gather_object(out, mine)
    return [{"rank": r, **v} for r, v in enumerate(out)]
