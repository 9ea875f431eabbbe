"""Stage `features`: the source to packed feature stores (training pool and test set)."""

import tempfile

from pipeline.params import load_params
from spkid.config import build
from spkid.data.features import build_features
from spkid.data.frontend import FrontEnd
from spkid.data.sources import SourceConfig


def main() -> None:
    params = load_params()
    block = params["features"]
    with tempfile.TemporaryDirectory(prefix="spkid-corpus-") as workdir:
        build_features(
            source=build(SourceConfig, params["source"], "source"),
            frontend=build(FrontEnd, block["frontend"], "features.frontend"),
            on_error=block["on_error"],
            workers=block["workers"],
            train_dir=params["paths"]["features"] + "/train",
            test_dir=params["paths"]["features"] + "/test",
            workdir=workdir,
        )


if __name__ == "__main__":
    main()
