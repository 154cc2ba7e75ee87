"""Weights on disk: safetensors for tensors plus a small JSON document, written atomically.

A checkpoint ``<stem>`` is the pair ``<stem>.safetensors`` and ``<stem>.json``. Loading never
unpickles anything, so a checkpoint from an untrusted source cannot run code.
"""

import json
import os
import tempfile
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from metacompress.errors import DataError

SUFFIXES = (".safetensors", ".json")


def checkpoint_stem(path: str | os.PathLike) -> Path:
    """``run/checkpoint``, ``run/checkpoint.json`` and ``run/checkpoint.safetensors`` name one checkpoint."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in SUFFIXES else path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(stem: str | os.PathLike, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Save tensors and a JSON-serializable ``info`` dict; both files carry the same write id."""
    stem = checkpoint_stem(stem)
    write_id = uuid.uuid4().hex
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata={"write_id": write_id})
    atomic_write_bytes(stem.with_suffix(".safetensors"), data)
    document = dict(info, write_id=write_id)
    atomic_write_bytes(stem.with_suffix(".json"), (json.dumps(document, indent=1) + "\n").encode())


def load_checkpoint(stem: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a checkpoint pair, checking both files exist, parse, and come from the same save."""
    stem = checkpoint_stem(stem)
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for path in (weights, meta):
        if not path.is_file():
            raise DataError(f"{path}: checkpoint file not found")
    try:
        info = json.loads(meta.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{meta}: not a JSON checkpoint description ({e})") from None
    if not isinstance(info, dict):
        raise DataError(f"{meta}: expected a JSON object")
    try:
        tensors = load_file(str(weights))
        with safe_open(str(weights), "pt") as f:
            write_id = (f.metadata() or {}).get("write_id")
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{weights}: not a readable safetensors file ({e})") from None
    if write_id != info.get("write_id"):
        raise DataError(f"{meta}: does not belong to {weights.name} (they were written by different saves)")
    return tensors, info
