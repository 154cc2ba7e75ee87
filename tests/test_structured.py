import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metacompress.cost import count_flops, count_params, cost_report, disk_bytes
from metacompress.errors import UserError
from metacompress.models import create_model
from metacompress.pruning.api import prune_channels_at_init
from metacompress.pruning.criteria import prospr, snip
from metacompress.pruning.structured import (channel_costs, channel_groups, channel_masking, channels_to_keep,
                                             compute_aware, estimated_cost, full_channel_masks, layer_costs,
                                             mask_channels_in_place, producer_costs, shrink)


class ConcatNet(nn.Module):
    """Two branches concatenated, then a depthwise conv and a classifier."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU())
        self.depthwise = nn.Conv2d(11, 11, 3, padding=1, groups=11)
        self.mix = nn.Sequential(nn.Conv2d(11, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8 * 4, 10)

    def forward(self, x):
        x = torch.cat([self.a(x), self.b(x)], dim=1)
        x = self.mix(self.depthwise(x))
        return self.head(F.adaptive_avg_pool2d(x, 2).flatten(1))


def network(name):
    torch.manual_seed(0)
    if name == "concat":
        return ConcatNet(), torch.randn(4, 3, 8, 8)
    if name == "lenet5":
        return create_model("lenet5", 10, 1, 28), torch.randn(4, 1, 28, 28)
    return create_model(name, 10, 3, 32), torch.randn(4, 3, 32, 32)


def random_keep(groups, seed=0):
    g = torch.Generator().manual_seed(seed)
    keep = {grp.name: (torch.rand(grp.size, generator=g) < 0.6).float() for grp in groups}
    for mask in keep.values():
        mask[0] = 1  # never empty a layer
    return keep


def randomize_batchnorm(model):
    """Non-trivial BN statistics and affine parameters, so that eval-mode BN is not an identity."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.running_mean, m.weight, m.bias):
                t.data = torch.randn(t.shape, generator=g)
            m.running_var.data = torch.rand(m.running_var.shape, generator=g) + 0.5


@pytest.mark.parametrize("name", ["vgg19-3sp", "resnet20", "resnet18", "concat", "lenet5"])
def test_shrunk_model_computes_what_the_masked_model_computes(name):
    model, x = network(name)
    randomize_batchnorm(model)
    model.eval()
    groups = channel_groups(model, x[:1])
    keep = random_keep(groups)
    small = shrink(model, groups, keep, x[:1]).eval()
    masked = copy.deepcopy(model)
    mask_channels_in_place(masked, groups, keep)
    with torch.no_grad():
        with channel_masking(model, groups, keep):
            hooked = model(x)
        expected, got = masked(x), small(x)
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 1e-5 * scale
    assert (hooked - expected).abs().max() <= 1e-5 * scale
    assert count_params(small) < count_params(model)


@pytest.mark.parametrize("name", ["vgg19-3sp", "resnet20", "concat"])
def test_estimated_cost_equals_the_counted_cost_of_the_shrunk_model(name):
    model, x = network(name)
    groups = channel_groups(model, x[:1])
    table = layer_costs(model, x)
    before = (count_params(model), sum(c.flops for c in table.values()))
    assert before[1] == count_flops(model, x[:1])  # our per-layer table agrees with torch's counter
    for seed in range(2):
        keep = random_keep(groups, seed)
        small = shrink(model, groups, keep, x[:1])
        assert estimated_cost(table, groups, keep, *before) == (count_params(small), count_flops(small, x[:1]))


def test_residual_block_channels_share_one_mask_and_its_gradient_sums_both_branches():
    model, x = network("resnet20")
    groups = {g.name: g for g in channel_groups(model, x[:1])}
    stage = next(g for g in groups.values() if ("stages.1.0.shortcut.0", tuple(range(32))) in g.producers)
    # the downsampling shortcut, every block's last conv of the stage: one channel set (Figure 3.3)
    producers = {name for name, _ in stage.producers}
    assert producers == {"stages.1.0.shortcut.0", "stages.1.0.conv2", "stages.1.1.conv2", "stages.1.2.conv2"}
    assert stage.size == 32 and all(roots == tuple(range(32)) for _, roots in stage.producers)
    assert sum(name in producers for g in groups.values() for name, _ in g.producers) == len(producers)
    # d L / d c̃ of the shared mask = sum over the points it scales: check by finite differences
    model = model.double()
    x, y = x.double(), torch.tensor([0, 1, 2, 3])
    masks = {n: torch.ones(g.size, dtype=torch.float64) for n, g in groups.items()}
    masks[stage.name].requires_grad_(True)
    with channel_masking(model, list(groups.values()), masks):
        loss = F.cross_entropy(model(x), y)
    grad = torch.autograd.grad(loss, masks[stage.name])[0]
    eps = 1e-6
    for channel in (0, 7):
        values = []
        for sign in (1, -1):
            shifted = {n: m.detach().clone() for n, m in masks.items()}
            shifted[stage.name][channel] += sign * eps
            with torch.no_grad(), channel_masking(model, list(groups.values()), shifted):
                values.append(F.cross_entropy(model(x), y))
        assert grad[channel].item() == pytest.approx(((values[0] - values[1]) / (2 * eps)).item(), rel=1e-5)


class ThreeLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)  # 8×8 out, C_in·K² = 18
        self.conv2 = nn.Conv2d(4, 3, 3, stride=2, padding=1)  # 4×4 out, C_in·K² = 36
        self.fc = nn.Linear(3 * 16, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def test_compute_aware_scores_match_a_hand_computation():
    model, x = ThreeLayers(), torch.randn(1, 2, 8, 8)
    groups = channel_groups(model, x)
    assert sorted(g.name for g in groups) == ["conv1", "conv2"]
    layer = producer_costs(model, groups, x)
    assert layer == {"conv1": 2 * 9 * 64, "conv2": 4 * 9 * 16}  # C_in·K²·H·W per output channel
    costs = channel_costs(groups, layer)
    assert costs["conv1"].tolist() == [1152.0] * 4 and costs["conv2"].tolist() == [576.0] * 3
    scores = {"conv1": torch.tensor([1.0, -2.0, 3.0, 4.0]), "conv2": torch.tensor([1.0, 2.0, 3.0])}
    lam = 0.1
    c1, c2 = (1152 / 1728 + lam) / (1 + lam), (576 / 1728 + lam) / (1 + lam)  # Σ_l c_l = 1728
    got = compute_aware(scores, costs, 1728.0, lam)
    assert torch.allclose(got["conv1"], scores["conv1"].abs() / (c1 / c1))
    assert torch.allclose(got["conv2"], scores["conv2"].abs() / (c2 / c1))
    # a coupled channel costs the sum over the layers producing it
    resnet, xr = network("resnet20")
    resnet_groups = channel_groups(resnet, xr[:1])
    stage = next(g for g in resnet_groups if len(g.producers) == 4 and g.size == 32)
    per_layer = producer_costs(resnet, resnet_groups, xr[:1])
    assert channel_costs(resnet_groups, per_layer)[stage.name][0] == sum(per_layer[p] for p, _ in stage.producers)


def test_channel_selection_removes_the_lowest_scores_until_the_target_is_met():
    model, x = network("resnet20")
    groups = channel_groups(model, x[:1])
    table = layer_costs(model, x)
    before = (count_params(model), sum(c.flops for c in table.values()))
    torch.manual_seed(1)
    scores = {g.name: torch.rand(g.size) + (5.0 if g.size == 64 else 0.0) for g in groups}
    for target, index in (("params", 0), ("flops", 1)):
        keep = channels_to_keep(scores, groups, table, before, 0.5, target)
        removed = 1 - estimated_cost(table, groups, keep, *before)[index] / before[index]
        assert removed >= 0.5
        kept_scores = torch.cat([scores[n][keep[n] == 1] for n in keep])
        dropped_scores = torch.cat([scores[n][keep[n] == 0] for n in keep])
        assert dropped_scores.max() <= kept_scores.min()
        # one channel fewer would miss the target
        lowest_dropped = min(((n, int(i)) for n in keep for i in (keep[n] == 0).nonzero().flatten()),
                             key=lambda t: -scores[t[0]][t[1]])
        fewer = {n: m.clone() for n, m in keep.items()}
        fewer[lowest_dropped[0]][lowest_dropped[1]] = 1
        assert 1 - estimated_cost(table, groups, fewer, *before)[index] / before[index] < 0.5


def test_structured_prospr_with_zero_steps_is_3sp_and_batchnorm_does_not_hide_the_mask():
    model, x = network("resnet20")
    batches = [(x, torch.tensor([0, 1, 2, 3]))]
    groups = channel_groups(model, x[:1])
    masks = full_channel_masks(groups)
    masking = lambda c: channel_masking(model, groups, c)  # noqa: E731
    a = prospr.score(model, masks, batches, steps=0, masking=masking)
    b = snip.score(model, masks, batches, masking=masking)
    assert all(torch.equal(a[n], b[n]) for n in masks)
    assert min(s.abs().mean() for s in b.values()) > 1e-6  # after BN, the masks see real gradients


def test_structured_meta_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 16, 4),
                          nn.Tanh(), nn.Linear(4, 3)).double()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(5, 2, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (5,), generator=g))
               for _ in range(3)]
    groups = channel_groups(model, batches[0][0][:1])
    masks = {grp.name: torch.ones(grp.size, dtype=torch.float64) for grp in groups}
    masking = lambda c: channel_masking(model, groups, c)  # noqa: E731
    lr, momentum = 0.3, 0.9
    meta = prospr.meta_gradient(model, masks, batches, lr, momentum, 0.0, masking=masking)

    def loss_at(c):  # reference L(w_M(c̃)): plain autograd per step, no graph through the updates
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        velocity = {}
        with torch.no_grad(), channel_masking(model, groups, c):
            for x, y in batches[:-1]:
                with torch.enable_grad():
                    params = {n: w.detach().requires_grad_(True) for n, w in params.items()}
                    loss = F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)
                    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
                velocity = {n: grads[n] if n not in velocity else momentum * velocity[n] + grads[n] for n in params}
                params = {n: w - lr * velocity[n] for n, w in params.items()}
            x, y = batches[-1]
            return F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)

    eps = 1e-6
    for name, mask in masks.items():
        for i in range(mask.numel()):
            plus = {n: m.clone() for n, m in masks.items()}
            minus = {n: m.clone() for n, m in masks.items()}
            plus[name][i] += eps
            minus[name][i] -= eps
            fd = (loss_at(plus) - loss_at(minus)) / (2 * eps)
            assert meta[name][i].item() == pytest.approx(fd.item(), rel=1e-4, abs=1e-9)


def test_prune_channels_hits_the_target_and_refuses_to_empty_a_layer():
    model, x = network("vgg19-3sp")
    batches = [(x, torch.tensor([0, 1, 2, 3]))]
    result = prune_channels_at_init(model, batches, "uniform", 0.5, target="flops")
    assert 0.5 <= result.removed < 0.52
    assert result.flops[1] == count_flops(result.model, x[:1]) and result.params[1] == count_params(result.model)
    with torch.no_grad():
        assert result.model(x).shape == (4, 10)
    with pytest.raises(UserError, match="would remove every channel of"):
        prune_channels_at_init(ThreeLayers(), [(torch.randn(2, 2, 8, 8), torch.tensor([0, 1]))], "3sp", 0.97)
    with pytest.raises(UserError, match="compute-aware"):
        prune_channels_at_init(ThreeLayers(), [(torch.randn(2, 2, 8, 8), torch.tensor([0, 1]))], "uniform", 0.5,
                               compute_aware=True)


def test_rescale_multiplies_weights_by_root_fan_out_ratio():
    model, x = network("lenet5")
    batches = [(x, torch.tensor([0, 1, 2, 3]))]
    kept = prune_channels_at_init(copy.deepcopy(model), batches, "uniform", 0.5, seed=4)
    scaled = prune_channels_at_init(copy.deepcopy(model), batches, "uniform", 0.5, seed=4, init="rescale")
    for (name, a), (_, b) in zip(kept.model.named_modules(), scaled.model.named_modules()):
        if isinstance(a, (nn.Conv2d, nn.Linear)):
            original = dict(model.named_modules())[name]
            out_before, out_after = original.weight.shape[0], a.weight.shape[0]
            assert torch.allclose(b.weight, a.weight * (out_before / out_after) ** 0.5)


def test_cost_report_counts_what_it_should():
    model = ThreeLayers()
    report = cost_report(model, torch.randn(1, 2, 8, 8), num_classes=5, batch_size=8, repeats=3)
    assert report["params"] == 2 * 9 * 4 + 4 + 4 * 9 * 3 + 3 + 48 * 5 + 5
    assert report["flops"] == 2 * (18 * 4 * 64 + 36 * 3 * 16 + 48 * 5)
    assert report["params"] * 4 < report["disk_bytes"] == disk_bytes(model) < report["params"] * 4 + 1024
    assert report["cpu_prediction_ms"] > 0 and report["cpu_train_step_ms"] > 0


# Devices (issue 16): under ``torch.device("meta")`` a tensor made without an explicit device is a
# meta tensor, so a step that forgets ``device=`` fails on the CPU as it would with a model on a GPU.
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
STRUCTURED_CASES = [("uniform", False, "reinit"), ("3sp", False, "keep"), ("3sp", True, "rescale"),
                    ("prospr", True, "keep"), ("grasp", False, "keep")]


def structured_run(method, compute_aware, init, default_device=None, **kwargs):
    model, x = network("lenet5")
    batches = [(x, torch.tensor([0, 1, 2, 3]))] * 4
    options = {"samples_per_class": 1} if method == "grasp" else {}
    with torch.device(default_device) if default_device else contextlib.nullcontext():
        return prune_channels_at_init(model, batches, method, 0.5, compute_aware=compute_aware, init=init, seed=2,
                                      **options, **kwargs)


@pytest.mark.parametrize("method, compute_aware, init", STRUCTURED_CASES)
def test_every_structured_method_makes_its_tensors_where_the_model_is(method, compute_aware, init):
    result = structured_run(method, compute_aware, init, default_device="meta")
    assert {m.device.type for m in result.keep.values()} == {"cpu"}
    assert {p.device.type for p in result.model.parameters()} == {"cpu"}


@pytest.mark.parametrize("method, compute_aware, init", STRUCTURED_CASES)
def test_structured_device_cpu_passes_through_and_changes_nothing(method, compute_aware, init):
    default = structured_run(method, compute_aware, init)
    on_cpu = structured_run(method, compute_aware, init, device="cpu")
    assert all(torch.equal(default.keep[n], on_cpu.keep[n]) for n in default.keep)
    assert all(torch.equal(default.scores[n], on_cpu.scores[n]) for n in default.scores)
    expected = default.model.state_dict()
    assert all(torch.equal(t, expected[k]) for k, t in on_cpu.model.state_dict().items())


def test_channel_masks_and_costs_take_a_device():
    model, x = network("lenet5")
    groups = channel_groups(model, x[:1])
    assert {m.device for m in full_channel_masks(groups).values()} == {torch.device("cpu")}
    with torch.device("meta"):
        masks = full_channel_masks(groups, "cpu")
        costs = channel_costs(groups, producer_costs(model, groups, x[:1]), "cpu")
    assert {t.device.type for t in [*masks.values(), *costs.values()]} == {"cpu"}


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("method, compute_aware, init", STRUCTURED_CASES)
def test_every_structured_method_prunes_on_cuda_as_on_the_cpu(method, compute_aware, init, monkeypatch):
    """Uniform channels and re-initialized weights are identical; the gradient criteria agree up to
    float rounding (TF32 convolutions off), which can only swap channels scored near the cut."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    reference = structured_run(method, compute_aware, init)
    result = structured_run(method, compute_aware, init, device="cuda")
    assert all(p.is_cuda for p in result.model.parameters()) and all(m.is_cuda for m in result.keep.values())
    total = sum(m.numel() for m in reference.keep.values())
    differing = sum(int((result.keep[n].cpu() != m).sum()) for n, m in reference.keep.items())
    if method == "uniform":
        assert differing == 0
        expected = reference.model.state_dict()
        assert all(torch.equal(t.cpu(), expected[k]) for k, t in result.model.state_dict().items())
    else:
        assert differing <= max(2, 0.05 * total), f"{differing} of {total} channels differ"
        for n, s in reference.scores.items():
            torch.testing.assert_close(result.scores[n].cpu(), s, rtol=1e-2, atol=1e-3 * s.abs().max().item())
    assert result.removed >= 0.5
    with torch.no_grad():
        assert result.model(torch.randn(2, 1, 28, 28, device="cuda")).shape == (2, 10)
