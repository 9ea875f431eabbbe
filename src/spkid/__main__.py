"""spkid's command line.

python -m spkid identify --model MODEL FILE_OR_FOLDER... [--top-k K] [--out result.csv]
    [--bank BANK [--threshold T] [--with-classes]]
python -m spkid enroll --bank BANK [--model MODEL SPEAKER_DIR... [--name NAME]]
    [--remove NAME...] [--threshold T] [--list]
"""

import argparse
import csv
import sys
from pathlib import Path

from spkid.atomic import write_csv
from spkid.evaluate.bank import BankError, listing, load_bank
from spkid.serve import enroll
from spkid.serve.identifier import DEFAULT_THRESHOLD, checked_bank
from spkid.serve.identify import BANK_COLUMNS, COLUMNS, identify, identify_bank, load_identifier

IDENTIFY_HELP = f"""\
Identify the speakers of audio files with a trained tier (or ensemble), through the course
front end (16 kHz, peak normalised, silence trimmed, 40 log-mel bands), in batches of similar
lengths on the CPU or a GPU.

MODEL is a registered model (models:/spkid@champion), an MLflow run's model
(runs:/<run id>/model) or a checkpoint file (models/<tier>/best.pt; the course front end's
settings). The table (CSV) has one row per file: file, speaker (the most probable),
probability, top_k ("speaker:probability ..." of the K most probable) and error (why a file
could not be used; such files do not stop the others). Exit status 1 when a file failed.

With --bank (made by `enroll`), the speakers are the bank's enrolled ones instead of the
trained classes: each file's answer is the enrolled speaker whose mean embedding is the most
similar (cosine), or "unknown" when that cosine is not above the threshold: --threshold, else
the one stored in the bank (enroll --threshold), else {DEFAULT_THRESHOLD}. With --with-classes
the model's trained speakers are candidates too, each scored by the cosine to its class weight
in the network's cosine head (amsoftmax, aamsoftmax: the boss, beyond and tdnn tiers; other
heads are refused), so that a voice is a trained speaker, an enrolled one or unknown, under one
threshold. The table's columns are then file, speaker, kind (enrolled, trained or unknown),
score (the best cosine), top_k ("speaker:cosine ...", a trained one "speaker[trained]:cosine")
and error.
"""

ENROLL_HELP = """\
Enrol new speakers into an enrolment bank without retraining: each SPEAKER_DIR's audio files
go through the course front end and MODEL's network (as identify reads them); the speaker,
named after the folder (or --name, for one folder), is the mean of their L2-normalised
embeddings. A speaker already enrolled is extended. The bank (a .npz file, created if absent)
records MODEL's digest and refuses another model's embeddings. Files that cannot be used are
listed with their reason on standard error and do not stop the others (exit status 1).

--remove drops speakers; --threshold stores the bank's open-set threshold (a cosine, or a
verify stage's reports/verify/<tier>/metrics.json: its openset.threshold); --list writes the
enrolled speakers (speaker, utterances) as CSV. They run in that order, after enrolment.
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
    cmd.add_argument("--bank", help="identify among this enrolment bank's speakers")
    cmd.add_argument("--threshold", type=float, help="bank mode: cosine for 'unknown'")
    cmd.add_argument(
        "--with-classes",
        action="store_true",
        help="bank mode: the trained speakers are candidates too (a cosine head's classes)",
    )
    cmd = commands.add_parser(
        "enroll",
        help="enrol new speakers into a bank",
        description=ENROLL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("folders", nargs="*", metavar="SPEAKER_DIR", help="one folder per speaker")
    cmd.add_argument("--bank", required=True, help="the bank file (.npz)")
    cmd.add_argument("--model", help="models:/NAME@ALIAS, runs:/ID/model or .pt (to enrol)")
    cmd.add_argument("--name", help="the speaker's name (one SPEAKER_DIR only)")
    cmd.add_argument("--remove", nargs="+", default=[], metavar="NAME", help="drop speakers")
    cmd.add_argument("--threshold", help="store a threshold: a cosine or a metrics.json")
    cmd.add_argument("--list", action="store_true", help="write the enrolled speakers (CSV)")
    cmd.add_argument("--device", default="auto", help="auto (a GPU if any), cpu, cuda or cuda:N")
    return main


def run_identify(args) -> int:
    if args.top_k < 1:
        sys.exit(f"--top-k must be >= 1, got {args.top_k}")
    for flag, given in (
        ("--threshold", args.threshold is not None),
        ("--with-classes", args.with_classes),
    ):
        if given and not args.bank:
            sys.exit(f"{flag} needs --bank")
    identifier = load_identifier(args.model)
    if args.bank:
        bank = checked_bank(args.bank, identifier)
        columns = BANK_COLUMNS
        rows = identify_bank(
            identifier,
            bank,
            args.inputs,
            args.top_k,
            args.threshold,
            args.device,
            with_classes=args.with_classes,
        )
    else:
        columns = COLUMNS
        rows = identify(identifier, args.inputs, args.top_k, args.device)
    if args.out:
        write_csv(args.out, columns, rows)
    else:
        csv.writer(sys.stdout).writerows([columns, *rows])
    failed = [r for r in rows if r[-1]]
    for row in failed:
        print(f"skipped {row[0]}: {row[-1]}", file=sys.stderr)
    return 1 if failed else 0


def run_enroll(args) -> int:
    if args.folders and not args.model:
        sys.exit("enrolling SPEAKER_DIRs needs --model")
    if args.name and len(args.folders) != 1:
        sys.exit(f"--name names one SPEAKER_DIR, got {len(args.folders)}")
    if not (args.folders or args.remove or args.threshold or args.list):
        sys.exit("nothing to do: give SPEAKER_DIRs, --remove, --threshold or --list")
    try:  # checked before anything is done
        threshold = None if args.threshold is None else enroll.threshold_of(args.threshold)
    except ValueError as err:
        sys.exit(str(err))
    failed = []
    if args.folders:
        names = [args.name] if args.name else [Path(f).resolve().name for f in args.folders]
        done = enroll.enroll_folders(
            load_identifier(args.model), args.bank, args.folders, names, args.device
        )
        for name, n in done.enrolled:
            print(f"enrolled {name} from {n} files into {args.bank}", file=sys.stderr)
        for path, reason in done.bad:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        failed = done.bad
    if args.remove:
        enroll.remove_speakers(args.bank, args.remove)
        print(f"removed {' '.join(args.remove)} from {args.bank}", file=sys.stderr)
    if threshold is not None:
        bank = enroll.set_threshold(args.bank, threshold)
        print(f"threshold {bank.threshold:.6f} stored in {args.bank}", file=sys.stderr)
    if args.list:
        bank = load_bank(args.bank)
        csv.writer(sys.stdout).writerows([("speaker", "utterances"), *listing(bank)])
    return 1 if failed else 0


COMMANDS = {"identify": run_identify, "enroll": run_enroll}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (BankError, FileNotFoundError) as err:
        sys.exit(f"{args.command}: {err}")


if __name__ == "__main__":
    sys.exit(main())
