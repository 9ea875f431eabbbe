import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from spkid import checkpoint
from spkid.data.split import SplitConfig, split_utterances, trained_mapping
from spkid.data.store import open_store
from spkid.evaluate.bank import model_digest
from spkid.evaluate.embed import (
    embed_arrays,
    embed_utterances,
    fused_digest,
    read_embeddings,
    read_fused,
    read_meta,
    write_embeddings,
)
from spkid.models import ModelConfig, SpeakerNet
from spkid.runtime import DeviceData
from spkid.train.config import Recipe, TierConfig
from tests.conftest import make_store

MODEL = ModelConfig(
    encoder="conformer",
    d_model=16,
    layers=1,
    heads=2,
    ffn=32,
    kernel=5,
    pooling="asp",
    embedding=8,
    head="aamsoftmax",
)
RECIPE = Recipe(segment=32, batch=4, lr=1e-3, weight_decay=0.0, warmup=0, steps=1, valid_every=1)
HELDOUT = SplitConfig(valid_ratio=0.25, heldout_speakers=0.34)  # 2 of 6 speakers


def embedded_project(tmp_path, config=HELDOUT):
    """A 6-speaker store split by ``config`` (2 held-out speakers), an untrained checkpoint of
    the others and its embedding folder: (folder, store, split, model)."""
    store_dir = make_store(tmp_path / "store", n_speakers=6, per_speaker=8)
    store = open_store(store_dir)
    split = split_utterances(store.speakers, store.sessions, config, seed=0)
    (tmp_path / "split.json").write_text(json.dumps(split))
    speaker2id = trained_mapping(store.speaker2id, [store.speakers[i] for i in split["train"]])
    torch.manual_seed(0)
    model = SpeakerNet(MODEL, store.n_mels, len(speaker2id)).eval()
    checkpoint.save(tmp_path / "best.pt", model, TierConfig(MODEL, RECIPE), 40, speaker2id)
    test = make_store(tmp_path / "test", n_speakers=2, per_speaker=3, seed=1)
    out = tmp_path / "embed"
    write_embeddings(tmp_path / "best.pt", store_dir, test, tmp_path / "split.json", out, "cpu")
    return out, store, split, model


def test_embeddings_are_unit_length_and_ignore_padding(tiny_store):
    torch.manual_seed(0)
    model = SpeakerNet(MODEL, 40, 4).eval()
    data = DeviceData(open_store(tiny_store), np.arange(12), torch.device("cpu"))
    alone = embed_utterances(model, data, max_frames=1)  # one utterance per batch: no padding
    padded = embed_utterances(model, data, max_frames=1 << 16)  # one batch padded to the longest
    assert alone.shape == (12, 8) and model.training is False
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone.norm(dim=1), torch.ones(12))
    direct = torch.nn.functional.normalize(model.embed(*next(data.full_batches(1))[1:]), dim=1)
    first = int(next(data.full_batches(1))[0][0])
    torch.testing.assert_close(alone[first], direct[0])


def test_arrays_outside_a_store_embed_as_in_one(tiny_store):
    torch.manual_seed(0)
    model = SpeakerNet(MODEL, 40, 4).eval()
    store = open_store(tiny_store)
    feats = [np.asarray(store.features(i)) for i in range(5)]
    from_store = embed_utterances(model, DeviceData(store, np.arange(5), torch.device("cpu")), 4096)
    np.testing.assert_allclose(embed_arrays(model, feats, "cpu"), from_store.numpy(), atol=1e-6)


def test_the_embedding_folder_holds_valid_heldout_and_test(tmp_path):
    out, store, split, model = embedded_project(tmp_path)
    meta = read_meta(out)
    assert meta["model"] == model_digest(model) and meta["dim"] == 8
    assert (meta["valid"], meta["heldout"], meta["test"]) == (8, 16, 6)
    for name in ("valid", "heldout"):
        emb, uids, speakers = read_embeddings(out, name)
        assert emb.shape == (len(split[name]), 8) and emb.dtype == np.float32
        assert uids == [store.uids[i] for i in split[name]]
        assert speakers == [store.speakers[i] for i in split[name]]
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert set(read_embeddings(out, "heldout")[2]) == set(split["heldout_speakers"])
    with open(out / "index.csv") as f:
        assert next(csv.reader(f)) == ["set", "row", "uid", "speaker"]
    with pytest.raises(ValueError, match="'train' is not an embedding set"):
        read_embeddings(out, "train")


def second_member(tmp_path, store, split):
    """Another untrained checkpoint (12-wide embeddings) of embedded_project's store and its
    embedding folder ``tmp_path``/embed2."""
    config = replace(MODEL, embedding=12, pooling="mean")
    speaker2id = trained_mapping(store.speaker2id, [store.speakers[i] for i in split["train"]])
    torch.manual_seed(1)
    model = SpeakerNet(config, store.n_mels, len(speaker2id)).eval()
    checkpoint.save(tmp_path / "b.pt", model, TierConfig(config, RECIPE), 40, speaker2id)
    out = tmp_path / "embed2"
    write_embeddings(
        tmp_path / "b.pt", tmp_path / "store", tmp_path / "test", tmp_path / "split.json", out
    )
    return out


def test_fused_cosines_are_the_mean_of_the_members_cosines(tmp_path):
    first, store, split, _model = embedded_project(tmp_path)
    second = second_member(tmp_path, store, split)
    fused, uids, speakers = read_fused([first, second], "heldout")
    a, b = read_embeddings(first, "heldout")[0], read_embeddings(second, "heldout")[0]
    assert fused.shape == (16, 8 + 12) and fused.dtype == np.float32
    assert (uids, speakers) == read_embeddings(first, "heldout")[1:]
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(fused @ fused.T, (a @ a.T + b @ b.T) / 2, atol=1e-5)
    np.testing.assert_allclose(read_fused([first], "heldout")[0], a, rtol=1e-6)
    assert fused_digest([first]) == read_meta(first)["model"]
    assert fused_digest([first, second]) not in (fused_digest([first]), fused_digest([second]))
    assert fused_digest([first, second]) != fused_digest([second, first])


def test_fusing_folders_of_other_utterances_is_refused_naming_them(tmp_path):
    first, *_ = embedded_project(tmp_path / "a")
    other, *_ = embedded_project(
        tmp_path / "b", SplitConfig(valid_ratio=0.5, heldout_speakers=0.34)
    )
    with pytest.raises(ValueError, match=r"b/embed and .*a/embed hold different valid utterances"):
        read_fused([first, other], "valid")
