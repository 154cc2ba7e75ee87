"""What a model costs to store and run: parameters, FLOPs, bytes on disk, single-example CPU
latency and training-step time (GPU too when there is one), each time the median of repeats."""

import copy
import statistics
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from metacompress.models import module_mode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs (2 × multiply-accumulates) of one forward pass on ``example`` (batch of one)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), module_mode(model, training=False), counter:
        model(example)
    return counter.get_total_flops()


def disk_bytes(model: nn.Module) -> int:
    """Size of the model's state as a safetensors file (what ``save_model`` writes)."""
    return len(safetensors_bytes({k: v.contiguous() for k, v in model.state_dict().items()}))


def median_seconds(step, repeats: int, warmup: int = 3, synchronize=lambda: None) -> float:
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@torch.no_grad()
def prediction_seconds(model: nn.Module, example: torch.Tensor, repeats: int = 50) -> float:
    """Median time to classify one example in eval mode (thesis Table 3.2's 'prediction time')."""
    with module_mode(model, training=False):
        return median_seconds(lambda: model(example), repeats)


@torch.no_grad()
def compare_prediction_seconds(models: dict[str, nn.Module], example: torch.Tensor, rounds: int = 15,
                               repeats: int = 20, threads: int | None = None) -> dict[str, float]:
    """Single-example prediction time of several models, measured in alternating rounds so that
    drifting machine load affects them all alike: the median over rounds of each round's median.
    ``threads`` pins torch's intra-op thread count for the measurement (None = leave it)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        per_round = {name: [] for name in models}
        for _ in range(rounds):
            for name, model in models.items():
                per_round[name].append(prediction_seconds(model, example, repeats))
        return {name: statistics.median(times) for name, times in per_round.items()}
    finally:
        torch.set_num_threads(previous)


def sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 1e-3):
    """A function doing one SGD step (momentum 0.9, weight decay 5e-4) of ``model`` on (x, y)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def training_step_seconds(model: nn.Module, example: torch.Tensor, num_classes: int, batch_size: int = 128,
                          repeats: int = 10, device: str = "cpu") -> float:
    """Median time of one SGD step (forward, backward, update) on a random batch, on a copy of the model."""
    net = copy.deepcopy(model).to(device).train()
    x = torch.randn((batch_size, *example.shape[1:]), device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    step = sgd_step(net, x, y)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    return median_seconds(step, repeats, synchronize=sync)


def cost_report(model: nn.Module, example: torch.Tensor, num_classes: int, batch_size: int = 128,
                repeats: int = 10) -> dict:
    """Every cost of ``model`` in one dict (times in milliseconds, sizes in bytes)."""
    example = example[:1]
    report = {
        "params": count_params(model),
        "flops": count_flops(model, example),
        "disk_bytes": disk_bytes(model),
        "cpu_prediction_ms": 1e3 * prediction_seconds(model, example, repeats=5 * repeats),
        "cpu_train_step_ms": 1e3 * training_step_seconds(model, example, num_classes, batch_size, repeats),
        "train_batch_size": batch_size,
    }
    if torch.cuda.is_available():
        report["gpu_train_step_ms"] = 1e3 * training_step_seconds(model, example, num_classes, batch_size, repeats,
                                                                  device="cuda")
    return report
