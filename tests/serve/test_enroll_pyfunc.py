"""The logged pyfunc model with an enrolment bank (params bank, threshold, with_classes),
loaded through mlflow.pyfunc: the answers of `identify --bank`."""

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from spkid import tracking
from spkid.__main__ import main
from spkid.data.store import open_store
from tests.serve.test_enroll import enrolled, rows, with_classes  # noqa: F401 (fixtures)


@pytest.fixture
def served(trained, with_classes, monkeypatch):  # noqa: F811
    """with_classes's model logged as a run's pyfunc model, loaded back by mlflow.pyfunc."""
    _args, _speakers, _bank, model = with_classes
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # tier_run sets it; undone after
    folder = model.parent / "run"
    folder.mkdir()
    mlflow.set_tracking_uri(trained.uri)
    meta = open_store(trained.root / "train").meta
    logs = (folder / "run_id", folder / "metrics.jsonl")
    with tracking.tier_run(
        trained.root, "spkid", "boss", "train@boss", meta["digest"], *logs, False
    ) as run:
        run.log_model([model], meta["frontend"])
    mlflow.set_tracking_uri(trained.uri)
    return mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")


def test_the_served_model_answers_with_a_bank_as_identify_does(served, with_classes, capsys):  # noqa: F811
    args, _speakers, bank, _model = with_classes
    files = args[args.index(str(bank)) + 1 :]
    for extra, params in (([], {}), (["--with-classes"], {"with_classes": True})):
        assert main([*args, *extra, "--threshold", "-1"]) == 0
        table = rows(capsys)
        cut = table[2]["score"]
        assert main([*args, *extra, "--threshold", cut]) == 0
        expected = [(r["speaker"], r["kind"], float(r["score"])) for r in rows(capsys)]
        frame = pd.DataFrame({"audio": files})
        out = served.predict(frame, params={"bank": str(bank), "threshold": float(cut), **params})
        got = list(zip(out.speaker, out.kind, out.score))
        assert [g[:2] for g in got] == [e[:2] for e in expected]
        assert [g[2] for g in got] == pytest.approx([e[2] for e in expected], abs=1e-6)
        assert all(len(k) == len(s) for k, s in zip(out.top_k_kinds, out.top_k_scores))
    assert "unknown" in out.speaker.tolist() and "trained" in out.kind.tolist()


def test_the_bank_s_stored_threshold_is_the_default(served, with_classes, tmp_path):  # noqa: F811
    args, (_trained, enrolled_speaker), bank, _model = with_classes
    files = args[args.index(str(bank)) + 1 :]
    assert main(["enroll", "--bank", str(bank), "--threshold", "0.999"]) == 0
    out = served.predict(pd.DataFrame({"audio": files}), params={"bank": str(bank)})
    assert out.speaker.tolist()[1:] == [enrolled_speaker, "unknown"]  # cosine 1, then below
    out = served.predict(pd.DataFrame({"audio": files}), params={"top_k": 1})
    assert "probability" in out and len(out.top_k_speakers[0]) == 1  # no bank: trained classes


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"bank": "/no/such/bank.npz"}, "bank: "),
        ({"with_classes": True}, "with_classes needs a bank"),
    ],
)
def test_a_missing_bank_or_a_bankless_with_classes_is_a_bad_request(
    served, trained, params, reason
):
    with pytest.raises(MlflowException) as error:
        served.predict(pd.DataFrame({"audio": sorted(trained.labels)[:1]}), params=params)
    assert error.value.error_code == "INVALID_PARAMETER_VALUE" and reason in error.value.message


def test_another_model_s_bank_is_a_bad_request(served, enrolled, trained):  # noqa: F811
    bank, *_ = enrolled  # the knowing model's
    with pytest.raises(MlflowException) as error:
        served.predict(
            pd.DataFrame({"audio": sorted(trained.labels)[:1]}), params={"bank": str(bank)}
        )
    assert (
        str(bank) in error.value.message
        and "scores across models mean nothing" in error.value.message
    )
