"""The Kaggle submission: one ``Id,Category`` row per entry of the test listing."""

import sys

from spkid.atomic import write_csv


def write_submission(path, uids: list, speakers: list, store_meta: dict, known: dict) -> dict:
    """Write the predicted rows, then a row for each test utterance the features stage
    rejected (``on_error: skip``): it gets the store's ``fallback_speaker`` (the training
    pool's most frequent speaker), with a warning on stderr naming its file.

    Args:
        path: the submission file.
        uids, speakers: the test store's uids and the speaker predicted for each.
        store_meta: the test store's meta.json.
        known: the model's speaker2id (the fallback must be one of them).

    Returns:
        {"rows": rows written, "rejected": rows that got the fallback speaker}.

    Raises:
        ValueError: rejected rows to fill, but the store names no fallback speaker the
            model knows.
    """
    missing = _rejected(store_meta, set(uids))
    fallback = store_meta.get("fallback_speaker")
    if missing and fallback not in known:
        raise ValueError(
            f"the test store lacks {len(missing)} rejected utterances, and its meta.json's "
            f"fallback_speaker {fallback!r} is not a speaker of the model: rebuild the stores"
        )
    for entry in missing:
        print(
            f"warning: {entry['path']}: rejected by the features stage ({entry['reason']}); "
            f"its row {entry['uid']!r} says {fallback}, the training pool's most frequent speaker",
            file=sys.stderr,
        )
    rows = [*zip(uids, speakers), *((entry["uid"], fallback) for entry in missing)]
    write_csv(path, ["Id", "Category"], rows)
    return {"rows": len(rows), "rejected": len(missing)}


def _rejected(store_meta: dict, present: set) -> list:
    """The rejected entries that are utterances of their own and absent from the store,
    each uid once, in listing order."""
    out, seen = [], set(present)
    for entry in store_meta.get("rejected", []):
        uid = entry.get("uid")
        if uid is not None and uid not in seen:
            seen.add(uid)
            out.append(entry)
    return out
