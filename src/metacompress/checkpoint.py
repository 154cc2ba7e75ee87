"""Weights on disk: safetensors for tensors plus a small JSON document, written atomically.

A checkpoint ``<stem>`` is the pair ``<stem>.safetensors`` and ``<stem>.json``. Loading never
unpickles anything, so a checkpoint from an untrusted source cannot run code.

The pair is replaced as a unit: while a new pair is renamed into place, the previous complete pair
stays on disk as ``<stem>.prev.safetensors`` / ``<stem>.prev.json`` (hard links, so ``<stem>.json``
never disappears), and is deleted only once the new pair is complete. Whenever a save is killed,
``load_checkpoint`` finds the old or the new pair, whole.
"""

import hashlib
import json
import logging
import os
import re
import secrets
import socket
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from metacompress.errors import DataError

SUFFIXES = (".safetensors", ".json")

log = logging.getLogger(__name__)

# Temporaries are ``.<name>.<host>.<pid>.<random>.tmp``: a writer killed mid-write leaves one, and
# the next writer in that folder on this host deletes it once no process has that pid.
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})\.(?P<pid>[0-9]+)\.[0-9a-f]{16}\.tmp")
_swept: set[str] = set()  # folders this process has already cleared of stale temporaries


def checkpoint_stem(path: str | os.PathLike) -> Path:
    """``run/checkpoint``, ``run/checkpoint.json`` and ``run/checkpoint.safetensors`` name one checkpoint."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in SUFFIXES else path


def _pair(stem: Path, previous: bool = False) -> tuple[Path, Path]:
    """The ``(weights, description)`` file names of the current or the previous pair."""
    files = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    return tuple(p.with_name(f"{p.stem}.prev{p.suffix}") for p in files) if previous else files


def checkpoint_exists(stem: str | os.PathLike) -> bool:
    """Whether a save of ``stem`` got far enough to leave a description (current or previous)."""
    stem = checkpoint_stem(stem)
    return any(_pair(stem, previous)[1].is_file() for previous in (False, True))


def _temp_path(path: Path, pid: int | None = None) -> Path:
    pid = os.getpid() if pid is None else pid
    return path.with_name(f".{path.name}.{_HOST}.{pid}.{secrets.token_hex(8)}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):  # no process can have that number
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def _sweep_stale_temps(folder: Path) -> None:
    """Delete temporaries left in ``folder`` by writers on this host that have since died
    (once per folder and process; never one whose writer is alive)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return
    key = os.path.abspath(folder)
    if key in _swept:
        return
    try:
        entries = [e.name for e in os.scandir(folder)]
    except OSError:
        return
    for name in entries:
        match = _TEMP.fullmatch(name)
        if match is None or match["host"] != _HOST:
            continue
        pid = int(match["pid"])
        if pid <= 0 or pid == os.getpid() or _alive(pid):
            continue
        try:
            os.unlink(folder / name)
        except OSError:
            pass  # another writer swept it first, or it is not ours to delete
    _swept.add(key)


def _discard(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new temporary next to ``path``, flushed to disk; returns the temporary."""
    tmp = _temp_path(path)
    # 0o666 less the umask, like any new file (mkstemp would make it 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _discard(tmp)
        raise
    return tmp


def _sync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable (best effort: not every system can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file.

    An ``OSError`` names ``path`` (not the hidden temporary, and not nothing as a failed
    ``write`` would), so the caller can tell the user which output failed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_temps(path.parent)
    try:
        tmp = _write_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            _discard(tmp)
            raise
    except OSError as error:
        raise naming(error, path) from None


def naming(error: OSError, path: str | os.PathLike) -> OSError:
    """``error`` as the same kind of OSError about ``path``."""
    return OSError(error.errno, error.strerror or str(error), str(path))


def _complete_write_id(weights: Path, meta: Path) -> str | None:
    """The write id of a pair whose two files exist, parse and match; None otherwise."""
    try:
        info = json.loads(meta.read_text())
        with safe_open(str(weights), "pt") as f:
            write_id = (f.metadata() or {}).get("write_id")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError, ValueError):
        return None
    return write_id if isinstance(info, dict) and write_id and info.get("write_id") == write_id else None


def _link_temp(source: Path, path: Path) -> Path:
    """A temporary next to ``path`` with the content of ``source``: a hard link, else a copy."""
    tmp = _temp_path(path)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links
        return _write_temp(path, source.read_bytes())
    return tmp


def save_checkpoint(stem: str | os.PathLike, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Save tensors and a JSON-serializable ``info`` dict; both files carry the same write id.

    Steps: write both new files as temporaries; keep the current pair (if complete) as the previous
    pair; rename the new files into place; delete the previous pair. Each step leaves a complete pair.
    """
    stem = checkpoint_stem(stem)
    weights, meta = _pair(stem)
    previous = _pair(stem, previous=True)
    write_id = uuid.uuid4().hex
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata={"write_id": write_id})
    document = (json.dumps(dict(info, write_id=write_id), indent=1) + "\n").encode()
    folder = weights.parent
    folder.mkdir(parents=True, exist_ok=True)
    _sweep_stale_temps(folder)
    temps: list[Path] = []
    try:
        temps.append(new_weights := _write_temp(weights, data))
        temps.append(new_meta := _write_temp(meta, document))
        if _complete_write_id(weights, meta) is not None:
            for current, kept in zip((weights, meta), previous):
                temps.append(tmp := _link_temp(current, kept))
                os.replace(tmp, kept)
            _sync_folder(folder)
        os.replace(new_weights, weights)
        os.replace(new_meta, meta)
        _sync_folder(folder)
    except BaseException:
        for tmp in temps:
            _discard(tmp)
        raise
    for path in reversed(previous):
        _discard(path)


def _load_pair(weights: Path, meta: Path) -> tuple[dict[str, torch.Tensor], dict]:
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


def load_checkpoint(stem: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a checkpoint pair, checking both files exist, parse, and come from the same save.

    When the current pair is incomplete (a save was killed half-way), the previous pair kept by
    that save is loaded instead, with a warning.
    """
    stem = checkpoint_stem(stem)
    try:
        return _load_pair(*_pair(stem))
    except DataError as problem:
        weights, meta = _pair(stem, previous=True)
        if not (weights.is_file() and meta.is_file()):
            raise
        try:
            loaded = _load_pair(weights, meta)
        except DataError:
            raise problem from None
        log.warning("%s; loading the previous checkpoint %s instead (a save was interrupted)", problem, meta.name)
        return loaded


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and plain values (for JSON)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in saved["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
