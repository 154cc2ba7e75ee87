"""Structured pruning at initialization (thesis §3.2, §3.4.2): one mask entry c̃ per conv output
channel / linear hidden unit, shared by every layer that must lose the channel together.

Channel groups come from Torch-Pruning's DependencyGraph, so residual additions (Figure 3.3's
"gradient binding"), concatenations, depthwise convs and BatchNorm are coupled for any model.
A mask scales the channel where it leaves its block — after the BatchNorm that follows a layer,
else at the layer's output — so c̃ = 0 is exactly "this channel is removed", and ∂L/∂c̃ is the
first-order effect of removing it. (A mask on the weights before BatchNorm would be normalized
away: BN(c·z) does not depend on c, and its gradient is ≈ 0.)
"""

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import partial

import torch
import torch_pruning as tp
from torch import nn

from metacompress.errors import UserError
from metacompress.models import module_mode
from metacompress.rng import keeps_global_rng

PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# (module name, the group channel behind each of its channels in this group): a concatenation
# makes a layer hold a slice of a group, a flatten makes several inputs share one channel.
Members = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class ChannelGroup:
    name: str  # the root layer's module name; also the key of this group's mask
    size: int  # number of channels
    producers: Members  # conv/linear layers whose output channels these are
    mask_points: Members  # modules whose outputs the mask scales
    norms: Members  # BatchNorm layers that lose the channels too
    consumers: Members  # conv/linear layers whose input channels these are


def observe_forward(model: nn.Module, example_input: torch.Tensor, names, record) -> None:
    """One eval-mode forward pass calling ``record(name, output)`` as each named module runs."""
    modules = dict(model.named_modules())

    def hook(name, module, inputs, output):
        record(name, output)  # returns nothing, so the output is kept

    handles = [modules[n].register_forward_hook(partial(hook, n)) for n in names]
    try:
        with torch.no_grad(), module_mode(model, training=False):
            model(example_input)
    finally:
        for h in handles:
            h.remove()


def final_layer(model: nn.Module, example_input: torch.Tensor) -> str:
    """The last conv/linear layer to run: the classifier, whose outputs are never pruned."""
    order: list[str] = []
    producers = [name for name, m in model.named_modules() if isinstance(m, PRODUCERS)]
    observe_forward(model, example_input, producers, lambda name, _: order.append(name))
    if not order:
        raise UserError(f"{type(model).__name__} has no conv or linear layers to prune")
    return order[-1]


def dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's graph, traced in eval mode so that BatchNorm statistics are left alone."""
    try:
        with module_mode(model, training=False):
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    except Exception as e:  # tracing failures surface as many exception types
        raise UserError(f"cannot trace {type(model).__name__} to find its channel groups: {e}") from None


def group_members(group, names: dict, kinds: tuple, on_side) -> Members:
    """The members of a Torch-Pruning group that are ``kinds`` modules pruned on one side."""
    return tuple((names[item.dep.target.module], tuple(int(r) for r in item.root_idxs)) for item in group.items
                 if isinstance(item.dep.target.module, kinds) and on_side(item.dep.handler))


def channel_groups(model: nn.Module, example_input: torch.Tensor, exclude=()) -> list[ChannelGroup]:
    """Every set of coupled prunable channels; the final layer and ``exclude`` patterns stay whole."""
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    last = final_layer(model, example_input)
    ignored = [m for n, m in modules.items() if n == last or any(fnmatch(n, p) for p in exclude)]
    graph = dependency_graph(model, example_input)
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=PRODUCERS):
        producers = group_members(group, names, PRODUCERS, graph.is_out_channel_pruning_fn)
        norms = group_members(group, names, NORMS, graph.is_out_channel_pruning_fn)
        if not producers:
            continue
        norm_names = {n for n, _ in norms}
        points = []
        for name, roots in producers:  # mask after the BatchNorm a layer feeds, if it feeds one
            following = [names.get(node.module) for node in graph.module2node[modules[name]].outputs]
            points.append((following[0] if len(following) == 1 and following[0] in norm_names else name, roots))
        root = group.items[0].dep.target.module
        groups.append(ChannelGroup(names[root], len(group.items[0].idxs), producers, tuple(points), norms,
                                   group_members(group, names, PRODUCERS, graph.is_in_channel_pruning_fn)))
    if not groups:
        raise UserError(f"{type(model).__name__} has no prunable channel groups"
                        + (f" outside {', '.join(exclude)}" if exclude else ""))
    return groups


def full_channel_masks(groups: list[ChannelGroup], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """c̃ = 1 for every channel, on ``device`` (the model's, where the masks scale its activations)."""
    return {g.name: torch.ones(g.size, device=device) for g in groups}


def scale_channels(mask: torch.Tensor, module: nn.Module, output: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Linear) or output.dim() <= 2:
        return output * mask  # (..., features)
    return output * mask.view(1, -1, *([1] * (output.dim() - 2)))  # (batch, channels, *spatial)


@contextmanager
def channel_masking(model: nn.Module, groups: list[ChannelGroup], masks: dict[str, torch.Tensor]):
    """While active, every mask point's output is multiplied by its group's mask (differentiably)."""
    modules = dict(model.named_modules())
    handles = [modules[point].register_forward_hook(
                   lambda mod, i, out, c=masks[g.name], idx=list(roots): scale_channels(c[idx], mod, out))
               for g in groups for point, roots in g.mask_points]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def layer_output_shapes(model: nn.Module, example_input: torch.Tensor, names) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    observe_forward(model, example_input, names, lambda name, out: shapes.setdefault(name, tuple(out.shape)))
    return shapes


def producer_costs(model: nn.Module, groups: list[ChannelGroup], example_input: torch.Tensor) -> dict[str, float]:
    """c_l = C_in·H·W·K² of one output channel of each prunable layer l (Eq. 3.4 without the
    constant 2; H × W is the layer's output size, C_in its inputs per group)."""
    modules = dict(model.named_modules())
    names = [p for g in groups for p, _ in g.producers]
    shapes = layer_output_shapes(model, example_input, names)
    costs = {}
    for name in names:
        layer = modules[name]
        if isinstance(layer, nn.Linear):
            costs[name] = float(layer.in_features * math.prod(shapes[name][1:-1]))  # tokens, if any
        else:
            costs[name] = float(layer.in_channels // layer.groups * math.prod(layer.kernel_size)
                                * math.prod(shapes[name][2:]))
    return costs


def channel_costs(groups: list[ChannelGroup], layer_costs: dict[str, float], device: str | torch.device = "cpu",
                  ) -> dict[str, torch.Tensor]:
    """Cost of removing each channel: Σ of c_l over the coupled layers that produce it (on ``device``)."""
    costs = {}
    for g in groups:
        cost = torch.zeros(g.size, dtype=torch.float64, device=device)
        for name, roots in g.producers:
            cost[list(roots)] += layer_costs[name]
        costs[g.name] = cost
    return costs


def compute_aware(scores: dict[str, torch.Tensor], costs: dict[str, torch.Tensor], total: float, lam: float,
                  ) -> dict[str, torch.Tensor]:
    """Retention scores R = |g| / c̃ (Eq. 3.5, Algorithm 2 lines 3–7). ``total`` = Σ_l c_l over the
    layers, so c̄ = c / total is the layer-normalized cost of Eq. 3.4; it is Laplace-smoothed,
    (c̄ + λ)/(1 + λ), and divided by its maximum. λ = 0 follows compute only; large λ is plain 3SP."""
    if lam < 0:
        raise UserError(f"the compute smoothing λ must be ≥ 0, got {lam}")
    smoothed = {name: (costs[name].to(s.device) / total + lam) / (1 + lam) for name, s in scores.items()}
    top = max(float(c.max()) for c in smoothed.values())
    return {name: (s.abs() / (smoothed[name] / top)).to(s.dtype) for name, s in scores.items()}


@torch.no_grad()
def mask_channels_in_place(model: nn.Module, groups: list[ChannelGroup], keep: dict[str, torch.Tensor]) -> None:
    """Zero the producers' weights/biases and the BN affine of removed channels: with BN in eval mode
    this model computes exactly what the shrunk model computes."""
    modules = dict(model.named_modules())
    for g in groups:
        dropped = keep[g.name] == 0
        for name, roots in set(g.producers) | set(g.mask_points):
            layer = modules[name]
            removed = dropped[list(roots)].to(layer.weight.device)
            layer.weight[removed] = 0
            if layer.bias is not None:
                layer.bias[removed] = 0


def shrink(model: nn.Module, groups: list[ChannelGroup], keep: dict[str, torch.Tensor],
           example_input: torch.Tensor) -> nn.Module:
    """A physically smaller copy of ``model`` without the channels where ``keep`` is 0: producers lose
    output channels, BN its entries, consumers their input channels (Torch-Pruning does the slicing)."""
    for g in groups:
        if not keep[g.name].any():
            coupled = [p for p, _ in g.producers if p != g.name]
            raise UserError(f"structured pruning would remove every channel of {g.name}"
                            f"{' (coupled with ' + ', '.join(coupled) + ')' if coupled else ''}; "
                            "lower the target or use the compute-aware criterion")
    small = copy.deepcopy(model)
    graph = dependency_graph(small, example_input)
    modules = dict(small.named_modules())
    for g in groups:
        removed = (keep[g.name] == 0).nonzero().flatten().tolist()
        if removed:
            root = modules[g.name]
            graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, removed).prune()
    return small


@dataclass(frozen=True)
class LayerCost:
    flops: float  # 2 × multiply-accumulates for one input example
    weights: int
    biases: int
    in_channels: int
    out_channels: int
    depthwise: bool  # its inputs are its outputs' channels: only the output count matters


def layer_costs(model: nn.Module, example_input: torch.Tensor) -> dict[str, LayerCost]:
    """FLOPs and parameters of every conv/linear layer on one example (``example_input[:1]``)."""
    modules = {n: m for n, m in model.named_modules() if isinstance(m, PRODUCERS)}
    shapes = layer_output_shapes(model, example_input[:1], modules)
    table = {}
    for name, layer in modules.items():
        bias = 0 if layer.bias is None else layer.bias.numel()
        if isinstance(layer, nn.Linear):
            positions = math.prod(shapes[name][1:-1])
            table[name] = LayerCost(2.0 * layer.weight.numel() * positions, layer.weight.numel(), bias,
                                    layer.in_features, layer.out_features, False)
        else:
            positions = math.prod(shapes[name][2:])
            table[name] = LayerCost(2.0 * layer.weight.numel() * positions, layer.weight.numel(), bias,
                                    layer.in_channels, layer.out_channels,
                                    layer.groups > 1 and layer.groups == layer.in_channels)
    return table


def estimated_cost(table: dict[str, LayerCost], groups: list[ChannelGroup], keep: dict[str, torch.Tensor],
                   total_params: int, total_flops: float) -> tuple[int, float]:
    """(parameters, FLOPs) of the model that ``shrink`` would build, without building it: each
    conv/linear layer keeps kept_out/C_out of its outputs and kept_in/C_in of its inputs."""
    kept_out = {name: cost.out_channels for name, cost in table.items()}
    kept_in = {name: cost.in_channels for name, cost in table.items()}
    removed_norm_params = 0
    for g in groups:
        dropped = keep[g.name] == 0
        for layer, roots in g.producers:
            kept_out[layer] -= int(dropped[list(roots)].sum())
        for layer, roots in g.consumers:
            kept_in[layer] -= int(dropped[list(roots)].sum())
        for _, roots in g.norms:
            removed_norm_params += 2 * int(dropped[list(roots)].sum())
    params, flops = total_params - removed_norm_params, total_flops
    for name, cost in table.items():
        out_ratio = kept_out[name] / cost.out_channels
        ratio = out_ratio if cost.depthwise else out_ratio * kept_in[name] / cost.in_channels
        params -= round(cost.weights * (1 - ratio)) + round(cost.biases * (1 - out_ratio))
        flops -= cost.flops * (1 - ratio)
    return params, flops


def channels_to_keep(scores: dict[str, torch.Tensor], groups: list[ChannelGroup], table: dict[str, LayerCost],
                     before: tuple[int, float], fraction: float, target: str) -> dict[str, torch.Tensor]:
    """Remove the lowest-scoring channels (one global ranking) until ``fraction`` of the parameters
    or FLOPs are gone: a binary search over how many, each candidate costed without building it.
    The search runs on the CPU (a few hundred small tensors); the masks are returned on the scores' device."""
    names = [g.name for g in groups]
    device = scores[names[0]].device
    flat = torch.cat([scores[n].detach().flatten().double().cpu() for n in names])
    order = torch.argsort(flat, stable=True)
    sizes = [scores[n].numel() for n in names]
    index = 0 if target == "params" else 1

    def keep_without(k: int) -> dict[str, torch.Tensor]:
        kept = torch.ones_like(flat)
        kept[order[:k]] = 0
        return dict(zip(names, kept.float().split(sizes)))

    def removed(k: int) -> float:
        return 1 - estimated_cost(table, groups, keep_without(k), *before)[index] / before[index]

    low, high = 0, len(flat)  # the answer lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        if removed(middle) >= fraction:
            high = middle
        else:
            low = middle + 1
    return {name: mask.to(device) for name, mask in keep_without(low).items()}


@torch.no_grad()
def rescale_to_fan_out(small: nn.Module, original: dict[str, LayerCost]) -> None:
    """Multiply each pruned layer's weights by √(original fan-out / pruned fan-out) (thesis §3.2.1)."""
    for name, layer in small.named_modules():
        if isinstance(layer, PRODUCERS) and name in original:
            out_now = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            layer.weight.mul_(math.sqrt(original[name].out_channels / out_now))


@keeps_global_rng
@torch.no_grad()
def reinitialize(small: nn.Module, seed: int) -> None:
    """Fresh PyTorch default initialization of every layer of the smaller network (SNIP's re-init).

    The draws are made on the CPU (the network is moved there and back, in place), so a seed gives
    the same weights whatever device the network lives on."""
    device = next(small.parameters()).device
    small.cpu()
    torch.manual_seed(seed)
    for module in small.modules():
        if module is not small and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    small.to(device)
