"""The run log every multi-run benchmark keeps: each finished run is appended to ``runs.jsonl``
under a key that includes a fingerprint of its settings (and of the device, when it is not the
CPU), so an interrupted benchmark resumes where it stopped and a changed setting is never mixed
with old runs. Also the device helpers the benchmarks share."""

import hashlib
import json
import statistics
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch

from metacompress.checkpoint import atomic_write_bytes
from metacompress.data import ClassificationData
from metacompress.measure import peak_tensor_bytes


def run_key(name: str, settings, *parts, device=None) -> str:
    """``device``: runs on another device than the CPU get keys of their own (their timings, and
    their accuracies up to float rounding, differ); CPU keys are the ones logged before devices."""
    described = asdict(settings) if is_dataclass(settings) else settings
    if device is not None and torch.device(device).type != "cpu":
        described = {"settings": described, "device": torch.device(device).type}
    fingerprint = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return "/".join([name, fingerprint, *map(str, parts)])


def read_runs(log: Path) -> dict:
    if not log.exists():
        return {}
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {r["key"]: r for r in records}


def append_run(log: Path, key: str, record: dict) -> dict:
    record = {"key": key} | record
    with open(log, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def rewrite_runs(log: Path, done: dict) -> None:
    """Replace ``log`` by the records of ``done`` (one line per key, in order): for records that
    gained a field later, without appending a second copy of each."""
    atomic_write_bytes(log, "".join(json.dumps(record) + "\n" for record in done.values()).encode())


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def training_subset(data: ClassificationData, size: int | None) -> ClassificationData:
    """A fixed random ``size``-example subset (the same for every run and seed); None keeps all."""
    if size is None or size >= len(data):
        return data
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    return data.subset(order[:size].sort().values)


def synchronizer(device):
    """What a timer calls before reading the clock: waits for the GPU's queued work on CUDA."""
    device = torch.device(device)
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def peak_bytes(fn, device) -> int:
    """Peak bytes held by tensors allocated while ``fn()`` runs: on the CPU the profiler's exact
    count (``peak_tensor_bytes``), on CUDA the allocator's peak above what was held before."""
    device = torch.device(device)
    if device.type != "cuda":
        return peak_tensor_bytes(fn)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    held = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - held

