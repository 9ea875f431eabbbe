"""Stage `split`: the training store to train/valid indices."""

from pipeline.params import load_params
from spkid.atomic import write_json
from spkid.data.split import split_indices
from spkid.data.store import open_store


def main() -> None:
    params = load_params()
    store = open_store(params.paths.train_store)
    train, valid = split_indices(
        store.speakers,
        store.sessions,
        valid_ratio=params.split.valid_ratio,
        seed=params.seed,
    )
    counts = {"train": len(train), "valid": len(valid), "speakers": len(store.speaker2id)}
    write_json(params.paths.split, {"train": train.tolist(), "valid": valid.tolist()})
    write_json(params.paths.split_counts, counts)


if __name__ == "__main__":
    main()
