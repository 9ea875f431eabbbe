"""Open-set identification on held-out speakers: a threshold on the best cosine score to the
enrolled speakers, calibrated for a false-alarm rate, and the detection-and-identification
rate (DIR).

Protocol: the held-out speakers are split by seed into an enrolled half (floor) and an
impostor half; each enrolled speaker is enrolled (evaluate/bank.py) from its first ``enroll``
utterances in store order, its other utterances are genuine probes; every impostor
utterance is an impostor probe. A probe is accepted when its best score is above the
threshold; a false alarm is an accepted impostor probe; DIR at a false-alarm rate is the
share of genuine probes accepted and named right at that rate's threshold.
"""

import numpy as np

from spkid.evaluate.bank import empty_bank, enroll, score

FALSE_ALARMS = (0.01, 0.05)  # the false-alarm rates DIR is reported at


def openset_protocol(speakers, enroll_count: int, seed: int) -> dict:
    """Enrolment, genuine and impostor utterances among held-out speakers.

    Args:
        speakers: (U,) speaker per utterance, in store order.
        enroll_count: utterances enrolling each enrolled speaker.
        seed: the enrolled/impostor draw's seed.

    Returns:
        {"enrolled", "impostors": speaker names sorted; "enrol", "genuine", "impostor":
        utterance index arrays}.
    """
    speakers = np.asarray(speakers)
    names = sorted(set(speakers.tolist()))
    if len(names) < 2:
        raise ValueError(f"open-set identification needs 2 held-out speakers, got {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    enrolled = sorted(names[i] for i in order[: len(names) // 2])
    enrol, genuine = [], []
    for name in enrolled:
        own = np.flatnonzero(speakers == name)
        if len(own) <= enroll_count:
            raise ValueError(
                f"verify.enroll: {name} has {len(own)} utterances; enrolling {enroll_count} "
                "leaves no probe"
            )
        enrol.extend(own[:enroll_count])
        genuine.extend(own[enroll_count:])
    impostor = np.flatnonzero(~np.isin(speakers, enrolled))
    return {
        "enrolled": enrolled,
        "impostors": sorted(set(names) - set(enrolled)),
        "enrol": np.array(enrol, np.int64),
        "genuine": np.array(genuine, np.int64),
        "impostor": impostor,
    }


def threshold_at(impostor_scores: np.ndarray, false_alarm: float) -> float:
    """The lowest threshold (accept: score above it) at which at most ``false_alarm`` of
    ``impostor_scores`` (N,) are accepted: the floor(false_alarm * N)+1-th highest score."""
    ranked = np.sort(np.asarray(impostor_scores))[::-1]
    return float(ranked[int(np.floor(false_alarm * len(ranked)))])


def detection_identification_rate(best: np.ndarray, correct: np.ndarray, threshold: float):
    """Share of genuine probes (best score (N,), right name (N,) bool) accepted and named right."""
    return float(np.mean((best > threshold) & correct))


def openset_metrics(
    embeddings: np.ndarray, speakers, model: str, enroll_count: int, false_alarm: float, seed: int
) -> dict:
    """The open-set protocol on held-out speakers' embeddings.

    Args:
        embeddings: (U, E) held-out utterances' embeddings of ``model`` (its digest).
        speakers: (U,) their speakers, in store order.
        enroll_count: utterances enrolling each enrolled speaker.
        false_alarm: the rate the reported ``threshold`` is calibrated for.
        seed: the protocol's seed.

    Returns:
        closed-set top1 among the enrolled, the threshold, DIR at FALSE_ALARMS (dir_fa01,
        dir_fa05), and the protocol's counts.
    """
    part = openset_protocol(speakers, enroll_count, seed)
    speakers = np.asarray(speakers)
    bank = empty_bank(model, embeddings.shape[1])
    for name in part["enrolled"]:
        mine = part["enrol"][speakers[part["enrol"]] == name]
        bank = enroll(bank, name, embeddings[mine], model)
    genuine = score(bank, embeddings[part["genuine"]], model)  # (G, S)
    impostor = score(bank, embeddings[part["impostor"]], model).max(1)  # (I,)
    correct = np.array(bank.names)[genuine.argmax(1)] == speakers[part["genuine"]]
    best = genuine.max(1)
    out = {"top1": float(correct.mean()), "false_alarm": false_alarm}
    out["threshold"] = threshold_at(impostor, false_alarm)
    for rate in FALSE_ALARMS:
        out[f"dir_fa{round(rate * 100):02d}"] = detection_identification_rate(
            best, correct, threshold_at(impostor, rate)
        )
    return {
        **out,
        "enrolled_speakers": len(part["enrolled"]),
        "impostor_speakers": len(part["impostors"]),
        "genuine_probes": len(part["genuine"]),
        "impostor_probes": len(part["impostor"]),
    }
