"""Stage `split`: the training store to train/valid (and held-out speakers') indices."""

from pipeline.params import load_params
from spkid.atomic import write_json
from spkid.data.split import split_utterances
from spkid.data.store import open_store


def main() -> None:
    params = load_params()
    store = open_store(params.paths.train_store)
    split = split_utterances(store.speakers, store.sessions, params.split, seed=params.seed)
    counts = {
        "train": len(split["train"]),
        "valid": len(split["valid"]),
        "heldout": len(split["heldout"]),
        "speakers": len(store.speaker2id),
        "heldout_speakers": len(split["heldout_speakers"]),
    }
    write_json(params.paths.split, split)
    write_json(params.paths.split_counts, counts)


if __name__ == "__main__":
    main()
