"""``metacompress bench NAME``: the benchmarks, imported only when this command runs."""

from pathlib import Path

from metacompress.cli.common import Command, add_data_root, add_json


def add_bench_arguments(p):
    p.add_argument("name", choices=sorted(bench_names()))
    p.add_argument("--profile", choices=("cpu", "paper"), default="cpu",
                   help="cpu: ≤ 60 min on 2 cores; paper: the thesis' full settings (GPU, full data)")
    p.add_argument("--out", help="results folder (default benchmarks/results/<name>)")
    p.add_argument("--codec", choices=("coin",), help="image-rd: the neural codec to compare (default coin)")
    p.add_argument("--modality", choices=("cifar10", "kodak", "audio", "volume", "sphere"),
                   help="coinpp-rd: the test setting")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), auto (a GPU if there is one), cuda or cuda:N: where networks train and "
                        "COIN/COIN++ fit, and pruning at initialization scores (the paper profiles need a GPU). "
                        "Decoding and the classical codecs stay on the CPU; structured-speedup keeps its CPU latency columns "
                        "on the CPU and adds GPU prediction time on cuda")
    add_data_root(p)
    add_json(p)


def bench_names():
    from metacompress.bench import BENCHMARKS

    return BENCHMARKS


def command_bench(args) -> dict:
    from metacompress.bench import BENCHMARKS, run_benchmark

    folder = args.name + (f"-{args.modality}" if args.modality else "")
    out = Path(args.out or f"benchmarks/results/{folder}")
    if args.profile == "paper" and not args.out:
        out = out / "paper"
    options = {k: v for k, v in (("codec", args.codec), ("modality", args.modality), ("device", args.device)) if v}
    results = run_benchmark(BENCHMARKS[args.name], args.name, args.profile, args.data_root, out, **options)
    print(f"results written to {out / 'results.json'}")
    return {"command": "bench", "name": args.name, "profile": args.profile, "out": str(out), "results": results}


COMMANDS = (Command("bench", "run a benchmark and write benchmarks/results/<name>/", add_bench_arguments,
                    command_bench),)
