"""The `features` stage's library call: a source to its training and test stores."""

from dataclasses import asdict

from spkid.data.errors import InputError
from spkid.data.frontend import FrontEnd
from spkid.data.sources import SourceConfig, list_source
from spkid.data.store import ON_ERROR, build_store


def build_features(
    source: SourceConfig,
    frontend: FrontEnd,
    on_error: str,
    workers: int,
    train_dir,
    test_dir,
    workdir,
) -> dict:
    """Extract the training pool and the test set of ``source`` into two stores.

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
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"features.on_error must be one of {list(ON_ERROR)}, got {on_error!r}")
    listing = list_source(source, frontend, on_error, workdir)
    meta = {"source": asdict(source), "frontend": frontend.as_dict()}
    no_training = InputError(source.dir or workdir, "no usable training utterances")
    written = {}
    for name, utts, folder, rejected, empty_error in (
        ("train", listing.pool, train_dir, listing.rejected, no_training),
        ("test", listing.test, test_dir, [], None),
    ):
        written[name] = build_store(
            folder,
            utts,
            listing.loader,
            listing.speaker2id,
            {**meta, "set": name, "rejected": rejected},
            workers,
            on_error,
            f"features/{name}",
            empty_error=empty_error,
        )
    return written
