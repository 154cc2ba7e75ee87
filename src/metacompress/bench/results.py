"""The results document every benchmark writes, and the machine description inside it."""

import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from metacompress.checkpoint import atomic_write_bytes


def machine_description() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "processor": platform.processor()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_results(out_dir: Path, name: str, profile: str, results: dict, command: str | None = None,
                  wall_time_s: float | None = None, device: str | None = None) -> Path:
    """``device``: where the benchmark trained and fitted (recorded when given)."""
    document = {
        "name": name,
        "profile": profile,
        "command": command or "metacompress " + " ".join(sys.argv[1:]),
        "machine": machine_description(),
        **({"device": str(device)} if device is not None else {}),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": wall_time_s,
        "results": results,
    }
    path = Path(out_dir) / "results.json"
    atomic_write_bytes(path, (json.dumps(document, indent=1) + "\n").encode())
    return path


def run_benchmark(module, name: str, profile: str, data_root, out_dir: Path, **options) -> dict:
    """``options`` (e.g. ``codec="coin"``) go to benchmarks that take them; ``device`` (auto, cpu,
    cuda, cuda:N) goes to every benchmark whose ``run`` takes one and is refused, if not the CPU, by
    one that does not."""
    import inspect

    from metacompress.distributed import resolve_device
    from metacompress.errors import UserError

    device = resolve_device(options.pop("device", "cpu"))
    if "device" in inspect.signature(module.run).parameters:
        options["device"] = device
    elif device.type != "cpu":
        raise UserError(f"bench {name} runs on the CPU only; drop --device {device}")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = module.run(profile=profile, data_root=data_root, out_dir=out_dir, **options)
    write_results(out_dir, name, profile, results, wall_time_s=round(time.perf_counter() - started, 1),
                  device=device)
    return results
