"""Stage `features`: the source to packed feature stores (training pool and test set)."""

import tempfile

from pipeline.params import load_params
from spkid.data.features import build_features


def main() -> None:
    params = load_params()
    block = params.features
    with tempfile.TemporaryDirectory(prefix="spkid-corpus-") as workdir:
        build_features(
            source=params.source,
            frontend=block.frontend,
            on_error=block.on_error,
            workers=block.workers,
            train_dir=params.paths.train_store,
            test_dir=params.paths.test_store,
            workdir=workdir,
        )


if __name__ == "__main__":
    main()
