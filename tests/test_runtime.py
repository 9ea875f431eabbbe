import contextlib

import pytest
import torch

from spkid.config import ConfigError, build
from spkid.runtime import (
    PRECISIONS,
    autocast,
    check_device,
    grad_scaler,
    pick_device,
    resolve_precision,
)
from spkid.train.config import Runtime

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_cpu_runs_float32_whatever_was_asked(precision):
    assert resolve_precision(precision, CPU) == "fp32"
    assert isinstance(autocast(CPU, resolve_precision(precision, CPU)), contextlib.nullcontext)
    assert not grad_scaler(CPU, "fp16").is_enabled()


@pytest.mark.parametrize(
    ("capability", "expected"), [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16")]
)
def test_auto_is_bf16_from_capability_8_and_fp16_below(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", CUDA) == expected
    assert resolve_precision("fp32", CUDA) == "fp32" and resolve_precision("bf16", CUDA) == "bf16"


def test_fp16_autocasts_and_scales_the_loss_on_gpus_only():
    cast = autocast(CUDA, "fp16", cache=False)
    assert cast.fast_dtype == torch.float16 and not cast._cache_enabled
    assert isinstance(autocast(CUDA, "fp32"), contextlib.nullcontext)
    assert not grad_scaler(CUDA, "bf16").is_enabled()


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'fp8'.*auto.*bf16.*fp16.*fp32"):
        resolve_precision("fp8", CPU)
    with pytest.raises(ConfigError, match="train.precision.*'fp8'.*auto"):
        build(Runtime, {"precision": "fp8"}, "train")
    assert build(Runtime, {}, "train").precision == "auto"


def test_pick_device_gives_each_rank_its_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto", 3) == torch.device("cuda:3")
    assert pick_device("cpu", 3) == CPU


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cpu:0"])
def test_check_device_rejects_unknown_names(name):
    with pytest.raises(ConfigError, match="train.device"):
        check_device(name)


def test_check_device_rejects_a_missing_gpu(monkeypatch):
    check_device("cpu")
    check_device("auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=r"train.device.*0 CUDA device"):
            check_device(name)
