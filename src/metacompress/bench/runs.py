"""The run log every multi-run benchmark keeps: each finished run is appended to ``runs.jsonl``
under a key that includes a fingerprint of its settings, so an interrupted benchmark resumes
where it stopped and a changed setting is never mixed with old runs."""

import hashlib
import json
import statistics
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch

from metacompress.checkpoint import atomic_write_bytes
from metacompress.data import ClassificationData


def run_key(name: str, settings, *parts) -> str:
    described = asdict(settings) if is_dataclass(settings) else settings
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
