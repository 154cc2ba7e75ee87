"""Wall time and peak memory of a block of code (CPU: resident set size; GPU: CUDA allocator)."""

import os
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the lifetime peak
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Measure:
    """``with Measure() as m: ...`` then ``m.seconds`` and ``m.peak_bytes`` (peak above the start).

    On CUDA the allocator's own peak counter is exact. On CPU a thread samples the resident set:
    a lower bound, since memory the process freed earlier is reused without the resident set
    growing. ``peak_tensor_bytes`` is the exact CPU figure, at the price of a profiled run.
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.002):
        self.device, self.interval = torch.device(device), interval
        self.seconds = 0.0
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = resident_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._start = time.perf_counter()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, resident_bytes())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.seconds = time.perf_counter() - self._start
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self.seconds = time.perf_counter() - self._start
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, resident_bytes()) - self._base
        return False


def peak_tensor_bytes(fn) -> int:
    """Peak of the bytes held by tensors allocated while ``fn()`` runs, from the profiler's record
    of every allocation and free (exact on CPU; the profiling slows ``fn``, so time it separately)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    held = peak = 0
    for event in events:
        held += event.nbytes()
        peak = max(peak, held)
    return peak
