"""Post-training quantization of any traceable ``nn.Module`` (thesis §2.2.3, §2.2.5, §4.3.1).

``quantize_model`` returns a fake-quantized copy as a ``torch.fx.GraphModule``:

1. BatchNorm is folded into the conv / linear layer before it (deployment does the same, and the
   folded weights are what gets quantized, §2.2.5);
2. every conv / linear weight is quantized on a signed symmetric grid (per tensor or per output
   channel; range = min/max or MSE-optimal) through a parametrization, so the same module also
   trains with the straight-through estimator (``qat.py``);
3. every activation function's output (quantization happens after the fused ReLU, §2.2.5) gets its
   own quantizer — one per call site, even where a model reuses one ``nn.ReLU`` — on an unsigned grid
   for ReLU-like outputs. Its range comes from the BatchNorm that feeds it, [β − kγ, β + kγ] per
   channel (Nagel et al. 2019; the thesis' §4.3.1 choice), propagated through residual additions,
   or, where no BatchNorm determines it, from calibration batches (min/max or MSE).
"""

import copy
import operator
from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from metacompress.errors import UserError
from metacompress.models import module_mode
from metacompress.quantization.quantizers import (Grid, QuantParams, fake_quantize, params_for_range,
                                                  tensor_params)

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
NONNEGATIVE_ACTIVATIONS = (nn.ReLU, nn.ReLU6)
ACTIVATION_MODULES = NONNEGATIVE_ACTIVATIONS + (nn.LeakyReLU, nn.Hardtanh, nn.GELU, nn.SiLU, nn.Tanh, nn.ELU)
NONNEGATIVE_FUNCTIONS = (F.relu, torch.relu, F.relu6)
ACTIVATION_FUNCTIONS = NONNEGATIVE_FUNCTIONS + (F.leaky_relu, F.gelu, F.silu, torch.tanh, F.hardtanh, F.elu)
# modules whose output stays inside the per-channel range of their input
RANGE_PRESERVING = (nn.Identity, nn.Dropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool2d,
                    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
ACT_RANGES = ("bn", "minmax", "mse")
CALIBRATION_SAMPLES = 1 << 20  # values kept per activation for the MSE search


class FakeQuantizer(nn.Module):
    """Rounds its input onto a fixed grid. Used after activations, and as the parametrization of
    weights (the weight a layer sees is its fake-quantized self; the STE passes gradients through).

    The grid's scale and zero-point are (non-persistent) buffers, so they follow the model when it
    moves to another device; they are not part of the state dict."""

    def __init__(self, params: QuantParams):
        super().__init__()
        self.grid, self.axis = params.grid, params.axis
        self.register_buffer("scale", params.scale.detach(), persistent=False)
        self.register_buffer("zero_point", params.zero_point.detach(), persistent=False)

    @property
    def params(self) -> QuantParams:
        return QuantParams(self.grid, self.scale, self.zero_point, self.axis)

    def forward(self, x):
        return fake_quantize(x, self.params)

    def extra_repr(self) -> str:
        return f"bits={self.params.grid.bits}, kind={self.params.grid.kind}"


def activation_quantizers(gm: nn.Module) -> list[FakeQuantizer]:
    """The activation quantizers of a quantized model, in the order of their call sites."""
    return [m for m in gm.children() if isinstance(m, FakeQuantizer)]


def trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(copy.deepcopy(model))
    except Exception as e:  # torch.fx raises many kinds for data-dependent control flow
        raise UserError(f"cannot trace {type(model).__name__} for quantization "
                        f"(torch.fx: {str(e).splitlines()[0]})") from None


def is_module(gm: fx.GraphModule, node: fx.Node, kinds) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), kinds)


def is_activation(gm: fx.GraphModule, node: fx.Node, nonnegative_only: bool = False) -> bool:
    modules = NONNEGATIVE_ACTIVATIONS if nonnegative_only else ACTIVATION_MODULES
    functions = NONNEGATIVE_FUNCTIONS if nonnegative_only else ACTIVATION_FUNCTIONS
    methods = ("relu",) if nonnegative_only else ("relu", "tanh", "sigmoid")
    return (is_module(gm, node, modules) or (node.op == "call_function" and node.target in functions)
            or (node.op == "call_method" and node.target in methods))


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """An eval-mode copy of ``model`` with every BatchNorm that directly follows a conv or linear
    layer (and is that layer's only user) folded into it; eval outputs are unchanged."""
    with module_mode(model, training=False):
        gm = trace(model)
    fold_batchnorm_in_place(gm)
    return gm.eval()


def fold_batchnorm_in_place(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if not is_module(gm, node, BATCHNORMS):
            continue
        producer = node.args[0]
        if not (isinstance(producer, fx.Node) and is_module(gm, producer, WEIGHT_LAYERS) and len(producer.users) == 1):
            continue
        layer, bn = gm.get_submodule(producer.target), gm.get_submodule(node.target)
        fuse = fuse_linear_bn_eval if isinstance(layer, nn.Linear) else fuse_conv_bn_eval
        parent, _, name = producer.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, name, fuse(layer, bn))
        node.replace_all_uses_with(producer)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()


def batchnorm_ranges(gm: fx.GraphModule, k: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel activation ranges implied by BatchNorm, [β − kγ, β + kγ], for every node whose
    range follows from them: BN outputs, sums of such nodes, and ReLUs of either."""
    ranges = {}
    for node in gm.graph.nodes:
        if is_module(gm, node, BATCHNORMS):
            bn = gm.get_submodule(node.target)
            device = bn.running_mean.device if bn.running_mean is not None else None
            beta = bn.bias.detach() if bn.affine else torch.zeros(bn.num_features, device=device)
            gamma = bn.weight.detach().abs() if bn.affine else torch.ones(bn.num_features, device=device)
            ranges[node.name] = (beta - k * gamma, beta + k * gamma)
        elif node.op == "call_function" and node.target in (operator.add, torch.add) and len(node.args) == 2:
            a, b = (ranges.get(arg.name) if isinstance(arg, fx.Node) else None for arg in node.args)
            if a is not None and b is not None:
                ranges[node.name] = (a[0] + b[0], a[1] + b[1])
        elif is_module(gm, node, RANGE_PRESERVING) and isinstance(node.args[0], fx.Node):
            if node.args[0].name in ranges:
                ranges[node.name] = ranges[node.args[0].name]
        elif is_activation(gm, node, nonnegative_only=True) and isinstance(node.args[0], fx.Node):
            inner = ranges.get(node.args[0].name)
            if inner is not None:
                ranges[node.name] = (inner[0].clamp(min=0), inner[1].clamp(min=0))
    return ranges


@torch.no_grad()
def calibration_samples(gm: fx.GraphModule, names: list[str], batches: Iterable, max_batches: int):
    """Run calibration batches; for each named node keep its (min, max) and a random sample of values."""
    seen: dict[str, list] = {name: [] for name in names}
    interpreter = fx.Interpreter(gm)
    original_run_node = interpreter.run_node

    def run_node(node):
        out = original_run_node(node)
        if node.name in seen:
            seen[node.name].append(out.detach().flatten())
        return out

    interpreter.run_node = run_node
    generator = torch.Generator().manual_seed(0)
    first = next(gm.parameters(), None)
    count = 0
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        interpreter.run(x if first is None else x.to(first.device))  # calibrated where the model is
        count += 1
        if count >= max_batches:
            break
    if count == 0:
        raise UserError("activation calibration needs at least one batch but got none")
    samples = {}
    for name, chunks in seen.items():
        values = torch.cat(chunks)
        if values.numel() > CALIBRATION_SAMPLES:
            # drawn on the CPU (the same sample on every device), then used where the values are
            keep = torch.randperm(values.numel(), generator=generator, device="cpu")[:CALIBRATION_SAMPLES].to(values.device)
            values = torch.cat([values[keep], values.min().view(1), values.max().view(1)])
        samples[name] = values
    return samples


def quantize_model(model: nn.Module, w_bits: int | None, a_bits: int | None, batches: Iterable | None = None,
                   per_channel: bool = False, weight_range: str = "minmax", act_range: str = "bn",
                   bn_k: float = 6.0, first_last_bits: int | None = None,
                   calibration_batches: int = 4) -> fx.GraphModule:
    """A fake-quantized copy of ``model`` with ``w_bits``-bit weights and ``a_bits``-bit activations
    (None leaves that side in floating point).

    ``act_range``: "bn" ([β − kγ, β + kγ] from the BatchNorm feeding each activation, k = ``bn_k``;
    activations without one are calibrated by min/max on ``batches``), "minmax" or "mse" (calibrated
    on up to ``calibration_batches`` of ``batches``). ``first_last_bits`` quantizes the first and last
    weight layers at that width instead (e.g. 8), a common deployment choice.

    The copy lives where ``model`` does; calibration batches are moved there. Its grids are buffers
    of its ``FakeQuantizer`` modules, so ``.to(device)`` moves them with the weights.
    """
    for bits in (w_bits, a_bits, first_last_bits):
        if bits is not None:
            Grid(bits)  # validates the width
    if act_range not in ACT_RANGES:
        raise UserError(f"unknown activation range method {act_range!r} (choose from {', '.join(ACT_RANGES)})")
    with module_mode(model, training=False):
        gm = trace(model).eval()
    bn_ranges = batchnorm_ranges(gm, bn_k) if act_range == "bn" else {}
    fold_batchnorm_in_place(gm)
    if w_bits is not None:
        quantize_weights(gm, w_bits, per_channel, weight_range, first_last_bits)
    if a_bits is not None:
        insert_activation_quantizers(gm, a_bits, act_range, bn_ranges, batches, calibration_batches)
    return gm.eval()


def weight_layers(gm: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in gm.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def quantize_weights(gm: fx.GraphModule, bits: int, per_channel: bool, method: str,
                     first_last_bits: int | None) -> None:
    layers = weight_layers(gm)
    for i, (_, layer) in enumerate(layers):
        width = first_last_bits if first_last_bits is not None and i in (0, len(layers) - 1) else bits
        params = tensor_params(layer.weight, Grid(width, "signed"), method, axis=0 if per_channel else None)
        parametrize.register_parametrization(layer, "weight", FakeQuantizer(params))


def insert_activation_quantizers(gm: fx.GraphModule, bits: int, method: str, bn_ranges: dict,
                                 batches: Iterable | None, calibration_batches: int) -> None:
    nodes = [n for n in gm.graph.nodes if is_activation(gm, n)]
    unknown = [n.name for n in nodes if n.name not in bn_ranges]
    samples = {}
    if unknown:
        if batches is None:
            which = "activations without a BatchNorm range" if method == "bn" else "activation ranges"
            raise UserError(f"{which} ({', '.join(unknown[:3])}{', …' if len(unknown) > 3 else ''}) "
                            "need calibration batches")
        samples = calibration_samples(gm, unknown, batches, calibration_batches)
    for node in nodes:
        nonnegative = is_activation(gm, node, nonnegative_only=True)
        grid = Grid(bits, "unsigned" if nonnegative else "asymmetric")
        if node.name in bn_ranges:  # only ReLUs get one
            high = bn_ranges[node.name][1].max()
            params = params_for_range(grid, torch.zeros((), device=high.device), high)
        else:
            params = tensor_params(samples[node.name], grid, "minmax" if method == "bn" else method)
        name = f"{node.name}_quantizer"
        gm.add_submodule(name, FakeQuantizer(params))
        with gm.graph.inserting_after(node):
            quantized = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(quantized, delete_user_cb=lambda user: user is not quantized)
    gm.recompile()


def quantized_layer_params(gm: nn.Module) -> dict[str, QuantParams]:
    """The weight grids of a quantized model, by layer name."""
    return {name: layer.parametrizations.weight[0].params for name, layer in weight_layers(gm)
            if parametrize.is_parametrized(layer, "weight")}
