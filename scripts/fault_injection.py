"""Fault injection through the real CLI (issue 15, README "Reliability").

Every command runs as ``metacompress ...`` in a subprocess, is killed with SIGKILL at a time spread
over its measured uninterrupted duration, and is then run again as a user would:

1. ``archive create DIR -o OUT.mcza --shard-size 4`` on 40 8×8 crops, rerun as is: the archive must
   be byte-identical to an uninterrupted run's, with no ``.*.tmp``, ``.parts`` or lock left.
2. ``train --model lenet5 --dataset mnist-sample --epochs 3``, rerun with ``--resume`` (from scratch
   when there is nothing to resume): the checkpoint's tensors must equal an uninterrupted run's
   exactly and ``metrics.jsonl`` must hold each epoch once.
3. ``encode`` of the 256×256 bundled photo: after the kill ``X.mcz`` is absent or complete (equal to
   the uninterrupted file); rerunning (``--force`` if it exists) leaves no ``.X.mcz.*.tmp``.
4. A full 64 KiB tmpfs, then the same tmpfs read-only: ``encode``, ``decode``, ``archive extract``
   and ``archive create`` into it must exit 2 with one ``metacompress: error:`` line and add nothing.

Writes ``OUT/results.json`` and ``OUT/fault_injection.png`` and prints a markdown table.

    nice -n 10 .venv/bin/python scripts/fault_injection.py --trials 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "metacompress")
ERROR = "metacompress: error:"
OUTCOMES = ("identical", "refused cleanly", "lost")
TIMEOUT = 300


# helpers -------------------------------------------------------------------------------------------

def cli(args, cwd, timeout=TIMEOUT):
    """Run ``metacompress ARGS``; returns (rc, stderr, seconds)."""
    started = time.perf_counter()
    done = subprocess.run([CLI] + [str(a) for a in args], cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)
    return done.returncode, done.stderr, time.perf_counter() - started


def cli_killed(args, cwd, after):
    """Start ``metacompress ARGS`` and SIGKILL its process group ``after`` seconds later.
    Returns (killed, rc, seconds)."""
    started = time.perf_counter()
    proc = subprocess.Popen([CLI] + [str(a) for a in args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        rc = proc.wait(timeout=after)
        return False, rc, time.perf_counter() - started
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        return True, rc, time.perf_counter() - started


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith(ERROR)]


def one_line_error(rc, stderr):
    return rc == 2 and len(error_lines(stderr)) == 1 and "Traceback" not in stderr


def listing(folder: Path) -> set[str]:
    """Every entry below ``folder`` (hidden ones too), relative."""
    return {str(p.relative_to(folder)) + ("/" if p.is_dir() else "") for p in folder.rglob("*")}


STARTUP_S = 0.0  # wall time of `metacompress --help` (imports), measured in main()


class KillTimes:
    """One kill time in each of ``trials`` equal slices of [0.8·start-up, 0.95·duration] (stratified,
    seeded), so the kills land while the command works rather than while Python imports torch.  On
    busy cores a run can be faster than the measured one: a run that exits before its kill lowers
    ``duration`` for the trials after it."""

    def __init__(self, duration, trials, rng):
        self.duration = duration
        self.fractions = [(i + rng.random()) / trials for i in range(trials)]

    def __iter__(self):
        for fraction in self.fractions:
            low, high = min(0.8 * STARTUP_S, 0.5 * self.duration), 0.95 * self.duration
            yield low + (high - low) * fraction

    def exited(self, seconds):
        self.duration = min(self.duration, seconds)


def outcome_counts(trials):
    return {name: sum(t["outcome"] == name for t in trials) for name in OUTCOMES}


def short(stderr):
    lines = error_lines(stderr) or stderr.strip().splitlines()[-1:]
    return lines[0][:300] if lines else ""


# set-up ------------------------------------------------------------------------------------------

def make_inputs(work: Path):
    """A tiny image base network (as tests/conftest.py::tiny_base), 40 8×8 crops, the 256² photo,
    a 32×32 crop and a folder of 8 crops."""
    from metacompress.data import sample_path
    from metacompress.inr.base_network import save_base
    from metacompress.codecs.coinpp_training import prepare_training, train_base
    from metacompress.inr.metalearning import MetaConfig

    source = sample_path("photo")
    train_dir = work / "train-image"
    train_dir.mkdir()
    (train_dir / source.name).write_bytes(source.read_bytes())
    settings, train, val = prepare_training("image", train_dir, patch=(8, 8), width=12, depth=2, latent_dim=6,
                                            w0=30.0, val_fraction=0.0)
    settings.code_patches = 64
    base = train_base(settings, train, val, MetaConfig(iterations=3, batch_size=4, outer_lr=1e-4))
    save_base(work / "tiny", base)

    photo = np.asarray(Image.open(source).convert("RGB"))
    crops, few = work / "crops", work / "crops8"
    crops.mkdir()
    few.mkdir()
    for i in range(40):
        y, x = (5 * i) % 248, (7 * i) % 248
        Image.fromarray(photo[y:y + 8, x:x + 8]).save(crops / f"{i:03d}.png")
        if i < 8:
            Image.fromarray(photo[y:y + 8, x:x + 8]).save(few / f"{i:03d}.png")
    Image.fromarray(photo).save(work / "photo.png")
    Image.fromarray(photo[100:132, 60:92]).save(work / "small.png")
    return work / "tiny"


# 1. archive create -------------------------------------------------------------------------------

def archive_scenario(work: Path, base: Path, trials: int, rng):
    def command(out):
        return ["archive", "create", work / "crops", "-o", out, "--base", base, "--shard-size", "4", "--no-progress"]

    ref_dir = work / "archive-ref"
    ref_dir.mkdir()
    rc, err, duration = cli(command(ref_dir / "a.mcza"), work)
    assert rc == 0, err
    reference = (ref_dir / "a.mcza").read_bytes()
    results = []
    schedule = KillTimes(duration, trials, rng)
    for k, at in enumerate(schedule):
        folder = work / f"archive-{k}"
        folder.mkdir()
        out = folder / "a.mcza"
        killed, _, ran = cli_killed(command(out), work, at)
        if not killed:
            schedule.exited(ran)
        parts = folder / "a.mcza.parts"
        at_kill = {"archive": out.exists(), "parts": parts.exists(),
                   "finished_shards": len([p for p in parts.glob("shard-*.json")]) if parts.exists() else 0}
        rc, err, rerun_s = cli(command(out), work)
        strays = sorted(listing(folder) - {"a.mcza"})
        identical = out.is_file() and out.read_bytes() == reference
        if identical and not strays and (rc == 0 or (one_line_error(rc, err) and "already exists" in err)):
            outcome = "identical"
        elif one_line_error(rc, err) and not strays and not out.exists():
            outcome = "refused cleanly"
        else:
            outcome = "lost"
        results.append({"kill_at_s": round(at, 2), "killed": killed, "at_kill": at_kill, "rerun_rc": rc,
                        "rerun_s": round(rerun_s, 2), "identical": identical, "strays": strays,
                        "error": short(err) if rc else "", "outcome": outcome})
    return {"command": "metacompress archive create crops/ -o a.mcza --base tiny --shard-size 4 (40 8×8 images)",
            "recovery": "the same command again", "uninterrupted_s": round(duration, 2),
            "archive_bytes": len(reference), "trials": results}


# 2. train --resume -------------------------------------------------------------------------------

def train_scenario(work: Path, trials: int, rng, batch_size: int):
    from metacompress.checkpoint import load_checkpoint

    def command(out, resume=False):
        return (["train", "--model", "lenet5", "--dataset", "mnist-sample", "--epochs", "3", "--batch-size",
                 str(batch_size), "--out", out, "--no-progress"] + (["--resume"] if resume else []))

    def epochs(run):
        path = run / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    rc, err, duration = cli(command(work / "train-ref"), work)
    assert rc == 0, err
    ref_tensors, _ = load_checkpoint(work / "train-ref" / "checkpoint")
    ref_losses = [e["train_loss"] for e in epochs(work / "train-ref")]
    expected = {"checkpoint.safetensors", "checkpoint.json", "metrics.jsonl"}
    results = []
    schedule = KillTimes(duration, trials, rng)
    for k, at in enumerate(schedule):
        run = work / f"train-{k}"
        killed, _, ran = cli_killed(command(run), work, at)
        if not killed:
            schedule.exited(ran)
        meta = run / "checkpoint.json"
        at_kill = {"checkpoint_epoch": json.loads(meta.read_text()).get("epoch") if meta.is_file() else None,
                   "metrics_lines": len(epochs(run)),
                   "files": sorted(listing(run)) if run.exists() else []}
        resumable = any((run / name).is_file() for name in ("checkpoint.json", "checkpoint.prev.json"))
        how = "--resume" if resumable else "from scratch (no checkpoint yet)"
        rc, err, rerun_s = cli(command(run, resume=resumable), work)
        entry = {"kill_at_s": round(at, 2), "killed": killed, "at_kill": at_kill, "rerun": how, "rerun_rc": rc,
                 "rerun_s": round(rerun_s, 2), "error": short(err) if rc else ""}
        if rc == 0:
            tensors, _ = load_checkpoint(run / "checkpoint")
            same_keys = tensors.keys() == ref_tensors.keys()
            diff = max((float((tensors[n].double() - ref_tensors[n].double()).abs().max()) if tensors[n].numel() else 0.0)
                       for n in ref_tensors if n in tensors) if same_keys else float("inf")
            exact = same_keys and all(tensors[n].dtype == ref_tensors[n].dtype and tensors[n].shape == ref_tensors[n].shape
                                      and bool((tensors[n] == ref_tensors[n]).all()) for n in ref_tensors)
            got = epochs(run)
            strays = sorted(listing(run) - expected)
            entry |= {"tensors_equal": exact, "max_abs_diff": diff, "metric_epochs": [e["epoch"] for e in got],
                      "losses_equal": [e["train_loss"] for e in got] == ref_losses, "strays": strays}
            ok = exact and entry["metric_epochs"] == [1, 2, 3] and not strays
            entry["outcome"] = "identical" if ok else "lost"
        else:
            entry["outcome"] = "refused cleanly" if one_line_error(rc, err) else "lost"
        results.append(entry)
    return {"command": f"metacompress train --model lenet5 --dataset mnist-sample --epochs 3 --batch-size {batch_size}",
            "recovery": "the same command with --resume when a checkpoint (or its .prev) exists, else without",
            "uninterrupted_s": round(duration, 2), "trials": results}


# 3. encode -------------------------------------------------------------------------------------

def encode_scenario(work: Path, base: Path, trials: int, rng):
    from metacompress.codecs.coinpp import decode
    from metacompress.inr.base_network import load_base

    def command(out, force=False):
        return ["encode", work / "photo.png", "-o", out, "--base", base, "--no-progress"] + (["--force"] if force else [])

    ref_dir = work / "encode-ref"
    ref_dir.mkdir()
    rc, err, duration = cli(command(ref_dir / "x.mcz"), work)
    assert rc == 0, err
    reference = (ref_dir / "x.mcz").read_bytes()
    rc, err, decode_s = cli(["decode", ref_dir / "x.mcz", "-o", ref_dir / "x.png", "--base", base], work)
    assert rc == 0, err
    loaded = load_base(base)
    results = []
    schedule = KillTimes(duration, trials, rng)
    for k, at in enumerate(schedule):
        folder = work / f"encode-{k}"
        folder.mkdir()
        out = folder / "x.mcz"
        killed, _, ran = cli_killed(command(out), work, at)
        if not killed:
            schedule.exited(ran)
        if not out.exists():
            state = "absent"
        elif out.read_bytes() == reference:
            state = "complete"
        else:
            try:
                decode(out.read_bytes(), loaded)
                state = "different but decodes"
            except Exception as problem:  # noqa: BLE001 -- any refusal counts
                state = f"partial ({type(problem).__name__})"
        temps_at_kill = sorted(p.name for p in folder.glob(".x.mcz.*.tmp"))
        rc, err, rerun_s = cli(command(out, force=out.exists()), work)
        strays = sorted(listing(folder) - {"x.mcz"})
        identical = out.is_file() and out.read_bytes() == reference
        if state in ("absent", "complete") and rc == 0 and identical and not strays:
            outcome = "identical"
        elif state in ("absent", "complete") and one_line_error(rc, err) and not strays:
            outcome = "refused cleanly"
        else:
            outcome = "lost"
        results.append({"kill_at_s": round(at, 2), "killed": killed, "at_kill": state,
                        "temporaries_at_kill": len(temps_at_kill), "rerun_rc": rc, "rerun_s": round(rerun_s, 2),
                        "identical": identical, "strays": strays, "error": short(err) if rc else "",
                        "outcome": outcome})
    return {"command": "metacompress encode photo.png -o x.mcz --base tiny (256×256)",
            "recovery": "the same command again (--force when x.mcz exists)", "uninterrupted_s": round(duration, 2),
            "decode_s": round(decode_s, 2), "mcz_bytes": len(reference), "trials": results}


# 4. disk full and read-only --------------------------------------------------------------------

def fill(mount: Path):
    """Write until ENOSPC; returns the bytes written."""
    written = 0
    with open(mount / "filler", "wb", buffering=0) as f:
        for size in (4096, 1):
            try:
                while True:
                    written += f.write(b"\0" * size)
            except OSError:
                pass
    return written


def storage_scenario(work: Path, base: Path):
    mount = work / "mnt"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        return {"skipped": f"mount failed: {mounted.stderr.strip()}"}
    commands = {
        "encode": ["encode", work / "small.png", "-o", mount / "x.mcz", "--base", base, "--no-progress"],
        "decode": ["decode", work / "encode-ref" / "x.mcz", "-o", mount / "x.png", "--base", base],
        "archive extract": ["archive", "extract", work / "archive-ref" / "a.mcza", "-o", mount / "out",
                            "--base", base, "--no-progress"],
        "archive create": ["archive", "create", work / "crops8", "-o", mount / "a.mcza", "--base", base,
                           "--shard-size", "4", "--steps", "2", "--no-progress"],
    }
    results = {"mount": "tmpfs size=64k", "disk full": {}, "read-only": {}}
    try:
        results["filled_bytes"] = fill(mount)
        for condition in ("disk full", "read-only"):
            if condition == "read-only":
                (mount / "filler").unlink()
                for leftover in sorted(mount.iterdir()):  # a clean, empty file system for the second case
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
                remount = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True)
                if remount.returncode != 0:
                    results[condition] = {"skipped": f"remount failed: {remount.stderr.strip()}"}
                    continue
            for name, args in commands.items():
                before = listing(mount)
                rc, err, seconds = cli(args, work)
                new = sorted(listing(mount) - before)
                ok = one_line_error(rc, err) and not new
                results[condition][name] = {"rc": rc, "error_lines": len(error_lines(err)),
                                            "traceback": "Traceback" in err, "new_files": new,
                                            "error": short(err), "seconds": round(seconds, 2), "ok": ok}
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
    return results


# report ------------------------------------------------------------------------------------------

def markdown(results):
    rows = ["| fault | trials (killed before exiting) | kill times | identical after recovery | refused cleanly | lost | "
            "uninterrupted run | scenario wall time |", "|---|---|---|---|---|---|---|---|"]
    for key, label in (("archive create", "`kill -9` during `archive create` (40 items, shards of 4), same command again"),
                       ("train", "`kill -9` during `train` (LeNet-5, 3 epochs), then `--resume`"),
                       ("encode", "`kill -9` during `encode` (256² photo), then again (`--force` if the file exists)")):
        s = results["scenarios"][key]
        c = s["outcomes"]
        times = [t["kill_at_s"] for t in s["trials"]]
        killed = sum(t["killed"] for t in s["trials"])
        rows.append(f"| {label} | {len(times)} ({killed}) | {min(times):.1f}–{max(times):.1f} s | {c['identical']} | "
                    f"{c['refused cleanly']} | {c['lost']} | {s['uninterrupted_s']:.1f} s | {s['wall_s']:.0f} s |")
    storage = results["scenarios"]["storage"]
    if "skipped" in storage:
        rows.append(f"| disk full / read-only | skipped: {storage['skipped']} |||||||")
    else:
        for condition in ("disk full", "read-only"):
            checks = storage[condition]
            if "skipped" in checks:
                rows.append(f"| {condition} | skipped: {checks['skipped']} |||||||")
                continue
            passed = [n for n, r in checks.items() if r["ok"]]
            failed = [n for n, r in checks.items() if not r["ok"]]
            label = f"{condition} (64 KiB tmpfs{', full' if condition == 'disk full' else ', remounted ro'}): " \
                    "encode, decode, archive extract, archive create into it"
            rows.append(f"| {label} | {len(checks)} | – | – | {len(passed)} (exit 2, one error line, nothing left) | "
                        f"{len(failed)}{' (' + ', '.join(failed) + ')' if failed else ''} | – | – |")
    return "\n".join(rows)


def plot(results, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, counts = [], []
    for key in ("archive create", "train", "encode"):
        labels.append(f"kill -9: {key}")
        counts.append([results["scenarios"][key]["outcomes"][o] for o in OUTCOMES])
    storage = results["scenarios"]["storage"]
    for condition in ("disk full", "read-only"):
        checks = storage.get(condition, {})
        if checks and "skipped" not in checks:
            labels.append(condition)
            counts.append([0, sum(r["ok"] for r in checks.values()), sum(not r["ok"] for r in checks.values())])
    counts = np.array(counts)
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    left = np.zeros(len(labels))
    names = ("identical after recovery", "refused cleanly (exit 2, one line)", "lost, wrong or files left behind")
    for j, (name, colour) in enumerate(zip(names, ("#4c9a5a", "#5b7fbf", "#c8453b"))):
        ax.barh(labels, counts[:, j], left=left, color=colour, label=name)
        left += counts[:, j]
    ax.invert_yaxis()
    ax.set_xlabel("trials / commands")
    ax.set_title("fault injection through the CLI")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4,
                        help="kill times per kill scenario (4: about 5 minutes on 2 busy cores; 8: about 9)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "reliability")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    parser.add_argument("--batch-size", type=int, default=256, help="train scenario batch size")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one, deleted at the end)")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="fault-injection-", dir=args.work)) if args.work else \
        Path(tempfile.mkdtemp(prefix="fault-injection-"))
    rng = random.Random(args.seed)
    global STARTUP_S
    STARTUP_S = cli(["--help"], work)[2]
    scenarios = {}
    try:
        t = time.perf_counter()
        base = make_inputs(work)
        setup_s = time.perf_counter() - t
        for key, run in (("archive create", lambda: archive_scenario(work, base, args.trials, rng)),
                         ("train", lambda: train_scenario(work, args.trials, rng, args.batch_size)),
                         ("encode", lambda: encode_scenario(work, base, args.trials, rng)),
                         ("storage", lambda: storage_scenario(work, base))):
            t = time.perf_counter()
            scenarios[key] = run()
            scenarios[key]["wall_s"] = round(time.perf_counter() - t, 1)
            if "trials" in scenarios[key]:
                scenarios[key]["outcomes"] = outcome_counts(scenarios[key]["trials"])
            print(f"{key}: {json.dumps(scenarios[key].get('outcomes', {}))} in {scenarios[key]['wall_s']} s",
                  file=sys.stderr, flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    results = {"trials_per_kill_scenario": args.trials, "seed": args.seed, "signal": "SIGKILL to the process group",
               "kill_times": "one per equal slice of [0.8 × start-up, 0.95 × the uninterrupted run's wall time] (seeded; "
                             "a run that exits before its kill lowers that wall time for later trials)",
               "startup_s": round(STARTUP_S, 2),
               "cpu_count": os.cpu_count(), "setup_s": round(setup_s, 1), "scenarios": scenarios,
               "total_wall_s": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "fault_injection.png")
    table = markdown(results)
    print(table)
    print(f"\ntotal {results['total_wall_s']} s; results in {args.out}", file=sys.stderr)
    failures = sum(s.get("outcomes", {}).get("lost", 0) for s in scenarios.values())
    failures += sum(not r["ok"] for c in ("disk full", "read-only")
                    for r in scenarios["storage"].get(c, {}).values() if isinstance(r, dict))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
