"""Crash consistency: a save killed at any step leaves a loadable checkpoint, a resumed run logs each
epoch once, and temporaries of dead writers are cleaned up (issue 15)."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from metacompress import checkpoint, training
from metacompress.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from metacompress.errors import DataError
from metacompress.training import TrainConfig, train
from test_training import SPEC, synthetic_digits


class Killed(BaseException):
    """The process died here: nothing after it runs, not even clean-up handlers."""


class FailingOS:
    """``os`` for checkpoint.py whose ``after``-th file-system step fails. With ``sticky`` (a kill)
    every later step fails too; otherwise it is one ordinary ``OSError`` and clean-up runs."""

    STEPS = {"open", "write", "fsync", "link", "replace", "rename", "unlink", "remove"}

    def __init__(self, after: int, sticky: bool = True):
        self.left, self.sticky, self.failed = after, sticky, False

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.STEPS:
            return real

        def step(*args, **kwargs):
            if (self.failed and self.sticky) or (self.left == 0 and not self.failed):
                self.failed = True
                raise Killed(name) if self.sticky else OSError(f"injected failure in os.{name}")
            self.left -= 1
            return None if name == "fsync" else real(*args, **kwargs)  # kills, not power cuts: skip the wait

        return step


def pair(seed: int):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(5, 3, generator=g), "b": torch.randn(7, generator=g)}, {"seed": seed, "epoch": seed}


def which(stem, candidates) -> int | None:
    """Which of ``candidates`` the checkpoint at ``stem`` loads as, exactly (None: nothing loads)."""
    try:
        tensors, info = load_checkpoint(stem)
    except DataError:
        return None
    info.pop("write_id")
    for index, (want_tensors, want_info) in enumerate(candidates):
        if info == want_info and tensors.keys() == want_tensors.keys() and all(
                torch.equal(tensors[k], want_tensors[k]) for k in tensors):
            return index
    raise AssertionError(f"{stem} loads as something that was never saved: {info}")


def save_failing(monkeypatch, stem, saved, after: int, sticky: bool = True) -> tuple[bool, bool]:
    """Run one save whose ``after``-th step fails: (whether it returned, whether a step failed)."""
    failing = FailingOS(after, sticky)
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "os", failing)
        try:
            save_checkpoint(stem, *saved)
        except (Killed, OSError):
            assert failing.failed
            return False, True
    return True, failing.failed  # some failures are absorbed (no hard links: copy; folder fsync)


@pytest.mark.parametrize("sticky", [True, False], ids=["killed", "oserror"])
def test_a_save_interrupted_at_any_step_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch, sticky):
    old, new, newer = pair(1), pair(2), pair(3)
    for first in (False, True):  # the very first save, and replacing a checkpoint
        k = 0
        while True:
            folder = tmp_path / f"{first}-{k}"
            stem = folder / "checkpoint"
            if first:
                folder.mkdir()
            else:
                save_checkpoint(stem, *old)
            returned, failed = save_failing(monkeypatch, stem, new, k, sticky)
            got = which(stem, [old, new])
            if returned:
                assert got == 1
            if not failed:
                assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]
                break
            assert got in ((None, 1) if first else (0, 1)), f"step {k}: {got}"
            if got is not None:  # resume code looks for <stem>.json before loading
                assert (folder / "checkpoint.json").is_file()
            if not sticky:  # an ordinary error cleans up its temporaries
                assert not list(folder.glob(".*.tmp")), k
            # a second save after the crash works, and a crash in it still leaves a complete pair
            for j in range(1, 40, 4) if sticky else ():
                again = folder / f"again-{j}"
                again.mkdir()
                for path in folder.iterdir():
                    if path.is_file():
                        (again / path.name).write_bytes(path.read_bytes())
                before = which(again / "checkpoint", [old, new, newer])
                returned, failed = save_failing(monkeypatch, again / "checkpoint", newer, j, sticky)
                assert which(again / "checkpoint", [old, new, newer]) in ({2} if returned else {before, 2}), (k, j)
                if not failed:
                    break
            save_checkpoint(stem, *newer)
            assert which(stem, [old, new, newer]) == 2
            assert not (folder / "checkpoint.prev.json").exists()
            k += 1
        assert k >= 6  # two temporaries written and renamed, the old pair kept, then deleted


def test_load_falls_back_to_the_previous_pair_with_a_warning(tmp_path, caplog):
    old, new = pair(1), pair(2)
    save_checkpoint(tmp_path / "x", *old)
    for suffix in (".safetensors", ".json"):
        (tmp_path / f"x.prev{suffix}").write_bytes((tmp_path / f"x{suffix}").read_bytes())
    save_checkpoint(tmp_path / "y", *new)
    (tmp_path / "x.safetensors").write_bytes((tmp_path / "y.safetensors").read_bytes())  # killed between renames
    with caplog.at_level(logging.WARNING, logger="metacompress.checkpoint"):
        assert which(tmp_path / "x", [old, new]) == 0
    assert "previous checkpoint x.prev.json" in caplog.text and "different saves" in caplog.text
    (tmp_path / "x.prev.json").write_text("{}")  # both broken: the current pair's problem is reported
    with pytest.raises(DataError, match="x.json: does not belong to x.safetensors"):
        load_checkpoint(tmp_path / "x")


def test_a_crash_between_metrics_and_checkpoint_does_not_log_an_epoch_twice(tmp_path, monkeypatch):
    data, test = synthetic_digits(n=200), {"test": synthetic_digits(n=100, seed=3)}
    config = TrainConfig(epochs=4, batch_size=50, lr=0.05, milestones=(0.5,), augment=True, seed=1)
    straight = train(SPEC, data, test, config, out_dir=tmp_path / "a", progress=False)

    real_save, crashed = training.save_checkpoint, []

    def save_once_killed(stem, tensors, info):
        if info["epoch"] == 3 and not crashed:
            crashed.append(True)
            raise Killed("after the metrics line of epoch 3")
        real_save(stem, tensors, info)

    monkeypatch.setattr(training, "save_checkpoint", save_once_killed)
    with pytest.raises(Killed):
        train(SPEC, data, test, config, out_dir=tmp_path / "b", progress=False)
    metrics = tmp_path / "b" / "metrics.jsonl"
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]
    with open(metrics, "a") as f:
        f.write('{"epoch": 4, "lr": 0.0')  # and a torn line after it
    resumed = train(SPEC, data, test, config, out_dir=tmp_path / "b", resume=True, progress=False)

    def deterministic(records):
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in records]

    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert deterministic(lines) == deterministic(straight.history) == deterministic(resumed.history)
    assert not list((tmp_path / "b").glob(".*.tmp"))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    try:
        os.kill(child.pid, 0)
    except ProcessLookupError:
        return child.pid
    pytest.skip("the pid of a finished child was reused at once")


def test_atomic_write_deletes_temporaries_of_dead_writers_only(tmp_path):
    out = tmp_path / "x.mcz"
    stale = checkpoint._temp_path(out, dead_pid())
    mine = checkpoint._temp_path(out, os.getpid())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = checkpoint._temp_path(out, sleeper.pid)
        foreign = [tmp_path / ".x.mcz.abc123.tmp",  # not named by this code: never touched
                   tmp_path / f".x.mcz.00000000.{stale.name.split('.')[-3]}.0123456789abcdef.tmp"]  # another host
        for path in (stale, mine, other, *foreign):
            path.write_bytes(b"half")
        atomic_write_bytes(out, b"complete")
        assert out.read_bytes() == b"complete"
        assert not stale.exists()
        assert mine.exists() and other.exists() and all(p.exists() for p in foreign)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            p.name for p in (out, mine, other, *foreign))
        assert str(os.getpid()) in mine.name and ".x.mcz." in mine.name
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_failed_atomic_write_leaves_nothing_behind(tmp_path, monkeypatch):
    out = tmp_path / "x.mcz"
    atomic_write_bytes(out, b"old")
    for k in range(4):  # open, write, fsync, replace
        with monkeypatch.context() as m:
            m.setattr(checkpoint, "os", FailingOS(k, sticky=False))
            with pytest.raises(OSError, match="injected"):
                atomic_write_bytes(out, b"new")
        assert [p.name for p in tmp_path.iterdir()] == ["x.mcz"] and out.read_bytes() == b"old"
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"new" and out.stat().st_mode & 0o777 == 0o666 & ~umask
