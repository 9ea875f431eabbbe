"""The so762 speakers' audio through the `audio_dir` source and the course front end into
one feature store (run where ../shared/data is; the store then travels to the GPU).

Usage: python bench/so762_features.py ../shared/data/so762-dev /tmp/so762_store [--no-trim]
(--no-trim keeps silence, as the README's deep anchors were measured.)
"""

import argparse
from functools import partial

from spkid.data.frontend import FrontEnd, audio_features
from spkid.data.sources import list_speaker_dirs
from spkid.data.store import build_store


def main(audio_dir: str, store_dir: str, trim: bool) -> None:
    utts = list_speaker_dirs(audio_dir)
    speaker2id = {s: i for i, s in enumerate(sorted({u.speaker for u in utts}))}
    fe = FrontEnd(trim_silence=trim)
    meta = {"source": {"name": "audio_dir", "dir": audio_dir}, "frontend": fe.as_dict()}
    loader = partial(audio_features, fe=fe)
    written = build_store(store_dir, utts, loader, speaker2id, meta, 0, "skip", "so762")
    print(written["counts"], len(written["rejected"]), "rejected")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("audio_dir")
    ap.add_argument("store_dir")
    ap.add_argument("--no-trim", action="store_true")
    args = ap.parse_args()
    main(args.audio_dir, args.store_dir, not args.no_trim)
