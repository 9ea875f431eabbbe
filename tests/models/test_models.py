import math

import pytest
import torch

from spkid.config import ConfigError, build
from spkid.models import ModelConfig, SpeakerNet
from spkid.models.encoders import ConformerEncoder
from spkid.models.heads import MarginHead
from spkid.models.masking import masked_batch_norm, masked_mean
from spkid.models.pooling import SelfAttentionPooling

ENCODERS = ["transformer", "conformer", "ecapa"]
POOLINGS = ["mean", "sap", "asp", "casp"]
HEADS = ["mlp", "bn_mlp", "amsoftmax", "aamsoftmax"]
PRENET_KINDS = ["linear", "conv"]


def config(**kw):
    if kw.get("encoder") == "ecapa":  # no heads, ffn, dropout or prenet; channels a multiple of 8
        return ModelConfig(
            **{"d_model": 16, "layers": 2, "pooling": "sap", "head": "amsoftmax", **kw}
        )
    base = {
        "encoder": "conformer",
        "d_model": 16,
        "layers": 2,
        "heads": 2,
        "ffn": 32,
        "dropout": 0.1,
        "pooling": "sap",
        "head": "amsoftmax",
        "kernel": 5,
    }
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("head", HEADS)
def test_shapes(encoder, pooling, head):
    model = SpeakerNet(
        config(encoder=encoder, pooling=pooling, head=head, embedding=8), n_mels=40, n_classes=7
    )
    feats, lengths = torch.randn(3, 30, 40), torch.tensor([30, 12, 5])
    assert model(feats, lengths, torch.tensor([0, 1, 2])).shape == (3, 7)
    assert model.embed(feats, lengths).shape == (3, 8)


@pytest.mark.parametrize("encoder", ["transformer", "conformer"])
@pytest.mark.parametrize("n_mels", [40, 41])
def test_conv_prenet_keeps_time_and_outputs_d_model(encoder, n_mels):
    model = SpeakerNet(config(encoder=encoder, prenet="conv"), n_mels=n_mels, n_classes=7)
    feats, lengths = torch.randn(3, 30, n_mels), torch.tensor([30, 12, 5])
    assert model.encoder.prenet(feats, lengths).shape == (3, 30, 16)
    frames, out_lengths = model.encoder(feats, lengths)
    assert frames.shape == (3, 30, 16) and torch.equal(out_lengths, lengths)
    assert model(feats, lengths).shape == (3, 7)


@pytest.mark.parametrize(
    "encoder, prenet",
    [(e, p) for e in ("transformer", "conformer") for p in PRENET_KINDS] + [("ecapa", "linear")],
)
@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_padding_never_changes_a_result(encoder, pooling, prenet, dtype):
    torch.manual_seed(0)
    cfg = config(encoder=encoder, pooling=pooling, prenet=prenet, head="bn_mlp")
    model = SpeakerNet(cfg, 40, 5).to(dtype).eval()
    alone = torch.randn(1, 17, 40, dtype=dtype)
    batch = torch.full((3, 40, 40), 7.0, dtype=dtype)  # padding with a loud value, not zeros
    batch[1, :17] = alone[0]
    batch[0] = torch.randn(40, 40, dtype=dtype)
    out_alone = model(alone, torch.tensor([17]))
    out_batch = model(batch, torch.tensor([40, 17, 3]))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(out_batch[1:2], out_alone, atol=tol, rtol=tol)


def test_aggregate_pools_every_layer_and_ignores_padding():
    torch.manual_seed(0)
    plain = SpeakerNet(config(layers=3), 40, 5).eval()
    mfa = SpeakerNet(config(layers=3, aggregate=True), 40, 5).eval()
    missing = mfa.encoder.load_state_dict(plain.encoder.state_dict(), strict=False).missing_keys
    assert all(k.startswith("aggregate") for k in missing)
    assert mfa.encoder.out_dim == 48 and mfa.pooling.out_dim == 48
    feats, lengths = torch.randn(2, 20, 40), torch.tensor([20, 9])
    last, _ = plain.encoder(feats, lengths)  # (B, T, 16)
    mfa.encoder.aggregate = torch.nn.Identity()
    every, _ = mfa.encoder(feats, lengths)  # (B, T, 48): layers 1, 2, 3 side by side
    torch.testing.assert_close(every[..., 32:], last)
    assert not torch.allclose(every[..., :16], last)
    padded = torch.cat([feats[1:2, :9], torch.full((1, 11, 40), 5.0)], dim=1)
    torch.testing.assert_close(mfa(padded, lengths[1:]), mfa(feats[1:2, :9], lengths[1:]))


def test_aggregate_needs_the_conformer():
    with pytest.raises(ConfigError, match="model.aggregate"):
        config(encoder="transformer", aggregate=True)


def test_masked_batch_norm_training_statistics_skip_padding():
    bn = torch.nn.BatchNorm1d(4).train()
    x = torch.randn(2, 10, 4)  # (B, T, C): channels last
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[1, 6:] = True
    polluted = x.clone()
    polluted[1, 6:] = 1e3
    out = masked_batch_norm(bn, polluted, pad)
    valid = torch.cat([x[0], x[1, :6]])  # (16, 4)
    expected = (valid - valid.mean(0)) / torch.sqrt(valid.var(0, unbiased=False) + bn.eps)
    torch.testing.assert_close(torch.cat([out[0], out[1, :6]]), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_mean, 0.1 * valid.mean(0))


def test_masked_batch_norm_without_padding_equals_the_masked_path():
    """The fused kernel for unpadded batches: the outputs, gradients and running statistics
    of the masked sums over the same frames with extra padded ones."""
    torch.manual_seed(0)
    fast, masked = torch.nn.BatchNorm1d(4).train(), torch.nn.BatchNorm1d(4).train()
    x = (torch.randn(2, 10, 4) * 3 + 1).requires_grad_()  # (B, T, C)
    out = masked_batch_norm(fast, x, torch.zeros(2, 10, dtype=torch.bool))
    padded = torch.cat([x, torch.full((2, 3, 4), 1e3)], 1)  # 3 padded frames per row
    pad = torch.arange(13)[None, :].expand(2, 13) >= 10
    ref = masked_batch_norm(masked, padded, pad)[:, :10]
    torch.testing.assert_close(out, ref)
    (g_fast,) = torch.autograd.grad(out.pow(2).sum(), x)
    (g_ref,) = torch.autograd.grad(ref.pow(2).sum(), x)
    torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fast, name), getattr(masked, name))


def test_masked_mean_averages_valid_frames_only():
    x = torch.randn(2, 5, 3, 4)  # (B, T, ...)
    pad = torch.tensor([[False] * 5, [False, False, True, True, True]])
    polluted = x.masked_fill(pad[..., None, None], 1e3)
    expected = torch.stack([x[0].mean(0), x[1, :2].mean(0)])
    torch.testing.assert_close(masked_mean(polluted, pad), expected)


def test_masked_batch_norm_eval_is_batch_norm():
    bn = torch.nn.BatchNorm1d(4)
    torch.nn.init.normal_(bn.weight)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.eval()
    x = torch.randn(3, 7, 4)
    got = masked_batch_norm(bn, x, torch.zeros(3, 7, dtype=torch.bool))
    torch.testing.assert_close(got, bn(x.transpose(1, 2)).transpose(1, 2))


def test_am_softmax_equals_its_formula():
    torch.manual_seed(0)
    head = MarginHead(6, 4, scale=30.0, margin=0.35, kind="additive")
    emb, labels = torch.randn(5, 6), torch.tensor([0, 3, 1, 1, 2])
    cos = (
        torch.nn.functional.normalize(emb, dim=1)
        @ torch.nn.functional.normalize(head.weight, dim=1).T
    )
    expected = 30.0 * (cos - 0.35 * torch.nn.functional.one_hot(labels, 4))
    torch.testing.assert_close(head(emb, labels), expected)
    torch.testing.assert_close(head(emb), 30.0 * cos)  # no margin at inference


def test_am_softmax_margin_zero_is_scaled_cosine():
    head = MarginHead(6, 4, scale=20.0, margin=0.0, kind="additive")
    emb, labels = torch.randn(5, 6), torch.randint(0, 4, (5,))
    torch.testing.assert_close(head(emb, labels), 20.0 * head.cosine(emb))


def test_aam_softmax_adds_angle_on_target_only():
    head = MarginHead(6, 4, scale=30.0, margin=0.2, kind="angular")
    emb, labels = torch.randn(5, 6), torch.tensor([0, 3, 1, 1, 2])
    cos = head.cosine(emb)
    out = head(emb, labels) / 30.0
    target = cos.gather(1, labels[:, None])[:, 0]
    theta = torch.acos(target)
    want = torch.where(theta + 0.2 < math.pi, torch.cos(theta + 0.2), target - 0.2 * math.sin(0.2))
    torch.testing.assert_close(out.gather(1, labels[:, None])[:, 0], want)
    others = torch.ones_like(cos, dtype=torch.bool).scatter(1, labels[:, None], False)
    torch.testing.assert_close(out[others], cos[others])


def test_self_attention_weights_sum_to_one_over_valid_frames():
    pool = SelfAttentionPooling(8)
    frames, lengths = torch.randn(3, 12, 8), torch.tensor([12, 7, 1])
    w = pool.weights(frames, lengths)
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    assert (w[1, 7:] == 0).all() and (w[2, 1:] == 0).all()
    assert (w[1, :7] > 0).all()


def test_model_config_rejects_bad_values_and_unknown_keys():
    with pytest.raises(ConfigError, match="not one of"):
        build(ModelConfig, {**vars(config()), "pooling": "max"}, "model")
    with pytest.raises(ConfigError, match="model.prenet"):
        build(ModelConfig, {**vars(config()), "prenet": "cnn"}, "model")
    with pytest.raises(ConfigError, match="unknown key"):
        build(ModelConfig, {**vars(config()), "depth": 3}, "model")
    with pytest.raises(ConfigError, match="odd"):
        config(kernel=4)
    with pytest.raises(ConfigError, match="ecapa takes no heads"):
        ModelConfig(**{**vars(config()), "encoder": "ecapa"})
    with pytest.raises(ConfigError, match="multiple of 8"):
        config(encoder="ecapa", d_model=20)
    with pytest.raises(ConfigError, match="conformer needs heads"):
        ModelConfig(encoder="conformer", d_model=16, layers=2, pooling="sap", head="mlp")


def test_ecapa_has_speechbrains_size():
    """SpeechBrain 1.0.3's ECAPA_TDNN(40, channels=[512] * 4 + [1536], lin_neurons=192) has
    6,091,648 parameters; ours up to the embedding has the same layout."""
    model = SpeakerNet(
        config(encoder="ecapa", d_model=512, layers=3, pooling="casp", embedding=192), 40, 10
    )
    assert model.encoder.out_dim == 1536 and model.embed(
        torch.randn(2, 50, 40), torch.tensor([50, 9])
    ).shape == (2, 192)
    head = sum(p.numel() for p in model.head.parameters())
    assert sum(p.numel() for p in model.parameters()) - head == 6_091_648


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_toeplitz_depthwise_equals_conv1d(dtype):
    from spkid.models.encoders import toeplitz_depthwise

    x = torch.randn(3, 6, 40, dtype=dtype, requires_grad=True)  # (B, C, T)
    conv = torch.nn.Conv1d(6, 6, 7, padding=3, groups=6).to(dtype)
    want = conv(x).permute(2, 0, 1)  # (T, B, C)
    got = toeplitz_depthwise(x.permute(2, 0, 1), conv.weight[:, 0, :], conv.bias)
    torch.testing.assert_close(got, want)
    (g1,) = torch.autograd.grad(want.square().sum(), conv.weight)
    (g2,) = torch.autograd.grad(
        toeplitz_depthwise(x.permute(2, 0, 1), conv.weight[:, 0, :], conv.bias).square().sum(),
        conv.weight,
    )
    torch.testing.assert_close(g1, g2)


def test_conformer_encoder_equals_torchaudio_without_padding():
    torch.manual_seed(0)
    enc = ConformerEncoder(40, 32, 2, 4, 64, 0.0, 7).eval()
    for layer in enc.conformer.conformer_layers:  # running statistics away from 0 and 1
        layer.conv_module.sequential[3].running_mean.normal_()
        layer.conv_module.sequential[3].running_var.uniform_(0.5, 2.0)
    feats, lengths = torch.randn(3, 25, 40), torch.full((3,), 25)
    want, _ = enc.conformer(enc.prenet(feats, lengths), lengths)
    got, _ = enc(feats, lengths)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
