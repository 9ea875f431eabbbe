"""The `features` stage's library call: a source to its training and test stores."""

import sys
from collections import Counter
from dataclasses import asdict

from spkid.data.errors import InputError
from spkid.data.frontend import FrontEnd
from spkid.data.sources import SourceConfig, list_source
from spkid.data.store import ON_ERROR, StagedStore, dense_mapping, load_store, staging, write_store


def build_features(
    source: SourceConfig,
    frontend: FrontEnd,
    on_error: str,
    workers: int,
    train_dir,
    test_dir,
    workdir,
) -> dict:
    """Extract the training pool and the test set of ``source`` into two stores, which
    change together or not at all (both are built beside the old ones, then swapped in).

    Under "skip", each store's meta.json lists its own set's rejected inputs; a speaker
    left with no usable utterance is dropped from both mappings (ids renumbered in the old
    order), said on stderr and listed as the train meta's ``dropped_speakers``. The test
    meta's ``fallback_speaker`` is the pool's most frequent speaker (the lowest id on a
    tie): predict gives it to the test utterances the store lacks.

    Args:
        source: which source and where.
        frontend: the course front end's parameters (audio sources).
        on_error: "fail" stops at the first bad input; "skip" drops it and lists it in
            meta.json's ``rejected``.
        workers: processes (0: every core).
        train_dir, test_dir: the two store folders written.
        workdir: scratch folder (the demo corpus is generated there).

    Returns:
        {"train": meta, "test": meta} as written.

    Raises:
        InputError: a bad input under "fail", no usable training utterance, or (whatever
            ``on_error``) an utterance both in the pool and the test set: the same file or
            the same content.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"features.on_error must be one of {list(ON_ERROR)}, got {on_error!r}")
    listing = list_source(source, frontend, on_error, workdir)
    _check_disjoint_files(listing.pool, listing.test)
    meta = {"source": asdict(source), "frontend": frontend.as_dict()}
    rejected = {
        name: [r for r in listing.rejected if r["set"] == name] for name in ("train", "test")
    }
    no_training = InputError(source.dir or workdir, "no usable training utterances")
    with staging(train_dir, test_dir) as (train_tmp, test_tmp):
        train = load_store(
            train_tmp,
            listing.pool,
            listing.loader,
            workers,
            on_error,
            "features/train",
            no_training,
        )
        test = load_store(
            test_tmp, listing.test, listing.loader, workers, on_error, "features/test"
        )
        _check_disjoint_content(train, test)
        speakers = Counter(u.speaker for u, _ in train.kept)
        speaker2id, dropped = dense_mapping(listing.speaker2id, speakers)
        if dropped:
            print(
                f"features: dropped {len(dropped)} speakers with no usable utterance from "
                f"mapping.json: {', '.join(dropped)}",
                file=sys.stderr,
            )
        fallback = max(speaker2id, key=lambda s: (speakers[s], -speaker2id[s]))
        return {
            "train": write_store(
                train,
                speaker2id,
                {
                    **meta,
                    "set": "train",
                    "rejected": rejected["train"],
                    "dropped_speakers": dropped,
                },
            ),
            "test": write_store(
                test,
                speaker2id,
                {**meta, "set": "test", "rejected": rejected["test"], "fallback_speaker": fallback},
            ),
        }


def _check_disjoint_files(pool: list, test: list) -> None:
    """Raise naming both entries when a test utterance is a training utterance's file."""
    by_file = {u.path: u for u in pool}
    for u in test:
        if u.path in by_file:
            raise InputError(
                u.path,
                f"test entry {u.uid!r} is the same file as training entry {by_file[u.path].uid!r}",
            )


def _check_disjoint_content(train: StagedStore, test: StagedStore) -> None:
    """Raise naming both entries when a test utterance has a training utterance's frames."""
    by_digest = train.digests()
    for digest, u in test.digests().items():
        if digest in by_digest:
            twin = by_digest[digest]
            raise InputError(
                u.path,
                f"test entry {u.uid!r} has the same content as training entry {twin.uid!r} "
                f"({twin.path})",
            )
