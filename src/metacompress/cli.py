"""The ``metacompress`` command: parses arguments and calls the library.

Contract: ``--json`` prints one JSON object as the last line of stdout; progress goes to stderr;
user errors exit with status 2 and one line on stderr.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from metacompress.errors import UserError


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def add_data_root(p):
    p.add_argument("--data-root", help="folder holding the datasets (default: $METACOMPRESS_DATA)")


def add_json(p):
    p.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")


def build_parser() -> argparse.ArgumentParser:
    from metacompress.data import CLASSIFICATION_DATASETS
    from metacompress.models import MODEL_NAMES

    parser = OneLineErrorParser(prog="metacompress", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)

    p = commands.add_parser("train", help="train a reference model on a classification dataset")
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--dataset", required=True, choices=CLASSIFICATION_DATASETS)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size (split over torchrun processes)")
    p.add_argument("--optimizer", choices=("sgd", "adam"))
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, help="pad-4 random crop + flip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.0, help="hold out this share of train for validation")
    p.add_argument("--out", help="run folder for metrics.jsonl and checkpoint.* (default runs/<model>-<dataset>-seed<S>)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--no-progress", action="store_true")
    add_data_root(p)
    add_json(p)

    p = commands.add_parser("bench", help="run a benchmark and write benchmarks/results/<name>/")
    p.add_argument("name", choices=sorted(bench_names()))
    p.add_argument("--profile", choices=("cpu", "paper"), default="cpu",
                   help="cpu: ≤ 60 min on 2 cores; paper: the thesis' full settings (GPU, full data)")
    p.add_argument("--out", help="results folder (default benchmarks/results/<name>)")
    add_data_root(p)
    add_json(p)

    p = commands.add_parser("demo", help="run the main features end to end on bundled samples")
    p.add_argument("--out", default="demo-output", help="folder for the report")
    add_json(p)
    return parser


def command_train(args) -> dict:
    from metacompress.data import load_classification
    from metacompress.recipes import FINAL_SPLITS, default_config, load_experiment_data, spec_for
    from metacompress.training import evaluate, train

    config = default_config(args.dataset, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                            lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                            augment=args.augment, seed=args.seed)
    train_data, eval_sets = load_experiment_data(args.dataset, args.data_root, args.val_fraction, args.seed)
    spec = spec_for(args.model, train_data)
    out = Path(args.out or f"runs/{args.model}-{args.dataset}-seed{args.seed}")
    started = time.perf_counter()
    result = train(spec, train_data, eval_sets, config, out_dir=out, resume=args.resume,
                   progress=not args.no_progress)
    summary = {"command": "train", "model": args.model, "dataset": args.dataset, "train_size": len(train_data),
               "epochs": config.epochs, "out": str(out), "time_s": round(time.perf_counter() - started, 2)}
    summary |= {k: v for k, v in result.final.items() if k.endswith("accuracy") or k == "epoch_time_s"}
    for split in FINAL_SPLITS.get(args.dataset, ()):
        scores = evaluate(result.model, load_classification(args.dataset, split, args.data_root))
        summary[f"{split}_accuracy"] = scores["accuracy"]
    print_table(summary)
    return summary


def print_table(summary: dict) -> None:
    for key, value in summary.items():
        print(f"{key:>22}: {value:.4f}" if isinstance(value, float) else f"{key:>22}: {value}")


def bench_names():
    from metacompress.bench import BENCHMARKS

    return BENCHMARKS


def command_bench(args) -> dict:
    from metacompress.bench import BENCHMARKS, run_benchmark

    out = Path(args.out or f"benchmarks/results/{args.name}")
    if args.profile == "paper" and not args.out:
        out = out / "paper"
    results = run_benchmark(BENCHMARKS[args.name], args.name, args.profile, args.data_root, out)
    print(f"results written to {out / 'results.json'}")
    return {"command": "bench", "name": args.name, "profile": args.profile, "out": str(out), "results": results}


def command_demo(args) -> dict:
    from metacompress.demo import run_demo

    return run_demo(Path(args.out))


COMMANDS = {"train": command_train, "bench": command_bench, "demo": command_demo}


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        summary = COMMANDS[args.command](args)
    except UserError as e:
        print(f"metacompress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metacompress: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False) and is_main_process():
        print(json.dumps(summary))
    return 0


def is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
