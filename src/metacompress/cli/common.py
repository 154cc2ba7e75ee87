"""Helpers shared by the command modules: the parser class, common options, tables, checks, errors.

Nothing here imports a command module or anything heavy (torch is imported inside the functions that
need it), so ``metacompress --help`` stays fast.
"""

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metacompress.errors import UserError


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


@dataclass(frozen=True)
class Command:
    """One ``metacompress NAME``: its one-line help, what adds its arguments, and what runs it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict]


def add_data_root(p):
    p.add_argument("--data-root", help="folder holding the datasets (default: $METACOMPRESS_DATA)")


def add_json(p):
    p.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")


def print_table(summary: dict) -> None:
    if not is_main_process():  # under torchrun every rank shares stdout; one table is enough
        return
    for key, value in summary.items():
        print(f"{key:>22}: {value:.4f}" if isinstance(value, float) else f"{key:>22}: {value}")


def is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def describe_os_error(error: OSError) -> str:
    """One line: the file, what went wrong, and that nothing partial was left (writes are atomic)."""
    where = error.filename if error.filename is not None else "output"
    return f"{where}: {error.strerror or error}; nothing was written there" if error.strerror else f"{where}: {error}"


def load_base_argument(path: str | None, device: str = "cpu", made_with: Callable[[str], bool] | None = None):
    """The base network at ``path``, on ``device``; without ``path`` a bundled one: the first whose
    content hash ``made_with`` accepts (the one a file was encoded with), else the default."""
    from metacompress.distributed import resolve_device
    from metacompress.inr.base_network import DEFAULT_BASE, bundled_bases, load_base

    stem = Path(path) if path else DEFAULT_BASE
    if path and stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    if not path and made_with is not None:
        stem = next((bundled for bundled, digest in bundled_bases() if made_with(digest)), DEFAULT_BASE)
    return load_base(stem, resolve_device(device)), str(stem)


def check_positive(value: int, option: str) -> None:
    if value < 1:
        raise UserError(f"{option} must be at least 1, got {value}")


def check_finite(value: float, option: str, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise UserError(f"{option} must be a finite number {'> 0' if positive else '≥ 0'}, got {value}")


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{option} expects comma-separated integers, got {text!r}") from None


def parse_region(text: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--region expects four integers x0,y0,x1,y1, got {text!r}") from None
    return x0, y0, x1, y1


def progress(args, total: int, description: str, unit: str = "it", lines: int = 10, enabled: bool = True):
    """The one progress display (``metacompress.progress``): off with --no-progress or -q."""
    from metacompress.progress import Progress

    shown = enabled and not getattr(args, "no_progress", False) and not getattr(args, "quiet", False)
    return Progress(total, description, unit, shown and is_main_process(), lines)


def add_device(p) -> None:
    p.add_argument("--device", default="auto",
                   help="where to compute: auto (a GPU if there is one), cpu, cuda or cuda:N (default auto)")


