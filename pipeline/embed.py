"""Stage `embed@<tier>`: the kept checkpoint's L2-normalised utterance embeddings of the valid
split, the held-out speakers and the test set."""

import sys

from pipeline.params import load_params
from spkid.evaluate.embed import write_embeddings


def main(tier: str) -> None:
    params = load_params()
    paths = params.paths
    write_embeddings(
        paths.best(tier),
        paths.train_store,
        paths.test_store,
        paths.split,
        paths.embeddings(tier),
        device=params.train.device,
        precision=params.train.precision,
        max_frames=params.evaluate.max_frames,
    )


if __name__ == "__main__":
    main(sys.argv[1])
