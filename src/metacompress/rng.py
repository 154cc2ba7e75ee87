"""Library calls that seed torch leave the caller's random state as they found it.

PyTorch's layer initialisers draw from the global generator, so building a model reproducibly
means seeding it.  ``keeps_global_rng`` runs a function on a fork of the global CPU (and CUDA)
generators: inside, ``torch.manual_seed(seed)`` makes the run reproducible exactly as before;
outside, the caller's random stream continues as if nothing had been drawn.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def keeps_global_rng(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]
