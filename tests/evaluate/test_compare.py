"""The tier comparison: Wilson intervals, the exact McNemar test, the paired reading of the
validate stage's predictions and the table built from them."""

import json

import numpy as np
import pytest

from spkid.atomic import write_csv
from spkid.evaluate.compare import (
    markdown,
    mcnemar,
    paired,
    read_correct,
    read_verification,
    tier_rows,
    wilson,
    write_comparison,
)


def test_wilson_matches_hand_values():
    # 8/10 at 95 %: centre (0.8 + z^2/20) / (1 + z^2/10), z = 1.959964 (worked by hand)
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # never below 0
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)  # never above 1


def test_wilson_narrows_to_4_points_at_500_utterances():
    low, high = wilson(450, 500)  # the demo's size: 0.9 top-1 on 500 utterances
    assert (high - 0.9, 0.9 - low) < (0.03, 0.03)
    low, high = wilson(72, 80)  # the old demo's 80 utterances
    assert high - low > 0.12


def test_wilson_refuses_no_trials():
    with pytest.raises(ValueError, match="at least one trial"):
        wilson(0, 0)


def test_mcnemar_exact_p_on_a_constructed_discordance():
    # 30 both right, 9 only a, 1 only b, 10 both wrong: p = 2 * P(X <= 1 | 10, 1/2) = 22/1024
    a = np.array([True] * 30 + [True] * 9 + [False] * 1 + [False] * 10)
    b = np.array([True] * 30 + [False] * 9 + [True] * 1 + [False] * 10)
    assert mcnemar(a, b) == {"a_only": 9, "b_only": 1, "p": pytest.approx(22 / 1024)}
    assert mcnemar(b, a)["p"] == pytest.approx(22 / 1024)  # two-sided


def test_mcnemar_of_agreeing_tiers_is_one():
    a = np.array([True, False, True])
    assert mcnemar(a, a) == {"a_only": 0, "b_only": 0, "p": 1.0}


def _predictions(path, rows):
    write_csv(path, ["utterance", "actual", "predicted"], rows)
    return path


def test_paired_aligns_utterances_whatever_the_row_order(tmp_path):
    a = _predictions(tmp_path / "a.csv", [["u1", "s", "s"], ["u2", "s", "t"]])
    b = _predictions(tmp_path / "b.csv", [["u2", "s", "s"], ["u1", "s", "t"]])
    sources = {"a": a, "b": b}
    right = paired({t: read_correct(f) for t, f in sources.items()}, ["a", "b"], sources)
    assert right["a"].tolist() == [True, False] and right["b"].tolist() == [False, True]


def test_paired_refuses_different_utterances_naming_the_files(tmp_path):
    a = _predictions(tmp_path / "a.csv", [["u1", "s", "s"]])
    b = _predictions(tmp_path / "b.csv", [["u9", "s", "s"]])
    sources = {"a": a, "b": b}
    with pytest.raises(ValueError, match=r"b\.csv and .*a\.csv hold different utterances"):
        paired({t: read_correct(f) for t, f in sources.items()}, ["a", "b"], sources)


def test_read_correct_refuses_an_old_predictions_file(tmp_path):
    old = tmp_path / "predictions.csv"
    write_csv(old, ["actual", "predicted"], [["s", "s"]])  # before the utterance column
    with pytest.raises(ValueError, match=r"predictions\.csv: .*\['utterance'\]"):
        read_correct(old)


def test_rows_and_table_carry_intervals_and_tests():
    right = {
        "simple": np.array([True] * 6 + [False] * 4),
        "boss": np.array([True] * 10),
    }
    train = {t: {"parameters": 1000, "train_seconds": 1.0, "steps": 5} for t in right}
    valid = {t: {"top1": r.mean(), "top5": 1.0, "macro_f1": r.mean()} for t, r in right.items()}
    verified = {"simple": None, "boss": {"eer": 0.125, "mindcf_p01": 0.5, "mindcf_p05": 0.25}}
    rows = tier_rows(["simple", "boss"], train, valid, right, verified, {"simple": 0.6})
    assert rows[0]["mcnemar_p"] is None and rows[0]["top1_low"] == pytest.approx(wilson(6, 10)[0])
    assert (rows[1]["wins"], rows[1]["losses"]) == (4, 0)
    assert rows[1]["mcnemar_p"] == pytest.approx(2 / 16)  # 4 one-sided discordances
    assert rows[0]["eer"] is None and rows[1]["mindcf_p05"] == 0.25
    table = markdown(rows, "t", 10)
    assert "| simple | 0.600 | 0.313-0.832 | - | - |" in table
    assert "| boss | 1.000 | 0.722-1.000 | +4 / -0 vs simple | 0.125 |" in table
    assert "| EER % | minDCF 0.01 | minDCF 0.05 |" in table
    assert "| 1.000 | 0.600 | n/a | n/a | n/a | 1,000 |" in table  # top-5, macro-F1, then n/a
    assert "| 1.000 | 1.000 | 12.50 | 0.500 | 0.250 | 1,000 |" in table


def _verify_file(path, metrics):
    path.write_text(json.dumps(metrics))
    return path


def test_read_verification_takes_asnorm_figures_or_n_a_and_names_a_bad_file(tmp_path):
    figures = {"eer": 0.2, "mindcf_p01": 0.9, "mindcf_p05": 0.7}
    good = _verify_file(tmp_path / "good.json", {"cosine": {}, "asnorm": {**figures, "top": 3}})
    assert read_verification(good) == figures
    assert read_verification(_verify_file(tmp_path / "none.json", {"heldout_speakers": 0})) is None
    with pytest.raises(ValueError, match=r"missing\.json: no verify metrics"):
        read_verification(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"old\.json: no asnorm \['eer'"):
        read_verification(_verify_file(tmp_path / "old.json", {"cosine": figures}))


def test_the_figure_is_written_with_and_without_verified_tiers(tmp_path):
    right = {"a": np.array([True, False]), "b": np.array([True, True])}
    train = {t: {"parameters": 1, "train_seconds": 1.0, "steps": 1} for t in right}
    valid = {t: {"top1": r.mean(), "top5": 1.0, "macro_f1": r.mean()} for t, r in right.items()}
    figures = {"eer": 0.1, "mindcf_p01": 0.5, "mindcf_p05": 0.3}
    for name, verified in {
        "some": {"a": None, "b": figures},
        "none": {"a": None, "b": None},
    }.items():
        rows = tier_rows(["a", "b"], train, valid, right, verified, {})
        write_comparison(rows, "t", 2, tmp_path / f"{name}.md", tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert "| n/a | n/a | n/a |" in (tmp_path / "none.md").read_text()
