"""spkid's command line.

python -m spkid identify --model MODEL FILE_OR_FOLDER... [--top-k K] [--out result.csv]
"""

import argparse
import csv
import sys

from spkid.atomic import write_csv
from spkid.serve.identify import COLUMNS, identify, load_identifier

IDENTIFY_HELP = """\
Identify the speakers of audio files with a trained tier (or ensemble), through the course
front end (16 kHz, peak normalised, silence trimmed, 40 log-mel bands), in batches of similar
lengths on the CPU or a GPU.

MODEL is a registered model (models:/spkid@champion), an MLflow run's model
(runs:/<run id>/model) or a checkpoint file (models/<tier>/best.pt; the course front end's
settings). The table (CSV) has one row per file: file, speaker (the most probable),
probability, top_k ("speaker:probability ..." of the K most probable) and error (why a file
could not be used; such files do not stop the others). Exit status 1 when a file failed.
"""


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m spkid", description="spkid's commands.")
    commands = main.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser(
        "identify",
        help="identify the speakers of audio files",
        description=IDENTIFY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER", help="audio files, folders")
    cmd.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/ID/model or .pt")
    cmd.add_argument("--top-k", type=int, default=5, help="speakers listed per file (default 5)")
    cmd.add_argument("--out", help="write the CSV here (default: standard output)")
    cmd.add_argument("--device", default="auto", help="auto (a GPU if any), cpu, cuda or cuda:N")
    return main


def run_identify(args) -> int:
    if args.top_k < 1:
        sys.exit(f"--top-k must be >= 1, got {args.top_k}")
    rows = identify(load_identifier(args.model), args.inputs, args.top_k, args.device)
    if args.out:
        write_csv(args.out, COLUMNS, rows)
    else:
        csv.writer(sys.stdout).writerows([COLUMNS, *rows])
    failed = [r for r in rows if r[-1]]
    for row in failed:
        print(f"skipped {row[0]}: {row[-1]}", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return run_identify(args)


if __name__ == "__main__":
    sys.exit(main())
