import math

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize
from torch import nn

from metacompress.errors import UserError
from metacompress.models import create_model
from metacompress.quantization import Grid, Regularizer, fold_batchnorm, grad_l1, grad_l2, quantize_model
from metacompress.quantization.diagnostics import induced_loss
from metacompress.quantization.ptq import activation_quantizers, quantized_layer_params
from metacompress.quantization.qat import requantize_weights
from metacompress.quantization.quantizers import (fake_quantize, minmax_params, mse_params, params_for_range,
                                                  to_integers)
from metacompress.quantization.regularizers import defensive_quantization, recorded_activations


def test_signed_grid_rounds_to_nearest_and_clamps():
    q = params_for_range(Grid(4, "signed"), torch.tensor(-1.0), torch.tensor(0.7))  # s = 1/7
    assert (q.grid.qmin, q.grid.qmax) == (-8, 7) and q.scale.item() == pytest.approx(1 / 7)
    x = torch.tensor([0.0, 0.05, 0.08, -0.55, 0.99, 2.0, -2.0])
    expected = torch.tensor([0, 0, 1, -4, 7, 7, -8]) / 7  # 0.08·7 = 0.56 → 1; −0.55·7 = −3.85 → −4
    assert torch.allclose(fake_quantize(x, q), expected)
    assert to_integers(x, q).tolist() == [0, 0, 1, -4, 7, 7, -8]


def test_unsigned_grid_uses_all_levels_for_nonnegative_values():
    q = params_for_range(Grid(3, "unsigned"), torch.tensor(0.0), torch.tensor(7.0))
    assert (q.grid.qmin, q.grid.qmax, q.scale.item(), q.zero_point.item()) == (0, 7, 1.0, 0)
    assert fake_quantize(torch.tensor([-1.0, 2.4, 3.6, 9.0]), q).tolist() == [0.0, 2.0, 4.0, 7.0]
    with pytest.raises(UserError, match="unsigned"):
        params_for_range(Grid(3, "unsigned"), torch.tensor(-1.0), torch.tensor(1.0))


def test_asymmetric_grid_has_an_integer_zero_point_and_represents_zero_exactly():
    q = params_for_range(Grid(2, "asymmetric"), torch.tensor(-1.0), torch.tensor(3.0))
    assert q.scale.item() == pytest.approx(4 / 3) and q.zero_point.item() == 1  # round(1 / (4/3)) = 1
    out = fake_quantize(torch.tensor([0.0, -5.0, 1.0, 10.0]), q)
    assert out[0].item() == 0.0  # real zero is on the grid
    assert out.tolist() == pytest.approx([0.0, -4 / 3, 4 / 3, 8 / 3])  # integers 1, 0, 2, 3 minus z = 1
    # a strictly positive range is widened to contain zero
    assert params_for_range(Grid(8, "asymmetric"), torch.tensor(2.0), torch.tensor(3.0)).zero_point.item() == 0


def test_per_channel_scales_follow_each_output_channel():
    w = torch.tensor([[0.5, -1.0], [3.0, 0.1], [0.0, 0.0]])
    q = minmax_params(w, Grid(8), axis=0)
    assert q.scale.tolist() == pytest.approx([1 / 127, 3 / 127, 1.0])  # an all-zero channel keeps scale 1
    out = fake_quantize(w, q)
    assert torch.allclose(out / q.scale.view(-1, 1), torch.round(out / q.scale.view(-1, 1)), atol=1e-4)
    assert out[0, 1].item() == -1.0 and out[1, 0].item() == pytest.approx(3.0) and (out[2] == 0).all()


def test_error_shrinks_with_every_extra_bit_and_mse_ranges_beat_minmax():
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    errors = [((fake_quantize(x, minmax_params(x, Grid(b))) - x) ** 2).mean().item() for b in range(2, 17)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-8
    for b in (2, 4, 8):
        mse = ((fake_quantize(x, mse_params(x, Grid(b))) - x) ** 2).mean().item()
        assert mse <= errors[b - 2] + 1e-12
    assert mse_params(x, Grid(2)).scale.item() < minmax_params(x, Grid(2)).scale.item()  # clips outliers


@pytest.mark.parametrize("bits", [1, 17, 0, 3.5])
def test_bit_widths_outside_2_to_16_are_refused(bits):
    with pytest.raises(UserError, match="bit-width"):
        Grid(bits)
    with pytest.raises(UserError, match="bit-width"):
        quantize_model(nn.Sequential(nn.Linear(2, 2)), bits, None)


def randomized_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    return model.eval()


class LinearBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "linear-bn"])
def test_batchnorm_folding_leaves_eval_outputs_unchanged(name):
    torch.manual_seed(0)
    model = randomized_batchnorm(LinearBN() if name == "linear-bn" else create_model(name))
    x = torch.randn(4, 6) if name == "linear-bn" else torch.randn(4, 3, 32, 32)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())
    assert model.training is False and any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in model.modules())


def test_ptq_puts_every_weight_on_its_grid_and_quantizes_each_relu_call_site():
    torch.manual_seed(0)
    model = randomized_batchnorm(create_model("resnet20"))
    q = quantize_model(model, 4, 4, per_channel=True)
    quantizers = activation_quantizers(q)
    assert len(quantizers) == 1 + 9 * 2  # stem + two per basic block; the blocks reuse one nn.ReLU
    for name, params in quantized_layer_params(q).items():
        layer = q.get_submodule(name)
        codes = layer.weight / params.scale.view(-1, *[1] * (layer.weight.ndim - 1))
        assert torch.allclose(codes, codes.round(), atol=1e-3) and codes.abs().max() <= 8
    # at 16 bits the quantized net is the float net up to tiny rounding
    x = torch.randn(2, 3, 32, 32)
    q16 = quantize_model(model, 16, 16, batches=[(x, None)], act_range="minmax")  # random BN stats ≠ data
    with torch.no_grad():
        assert torch.allclose(q16(x), model(x), atol=1e-2 * model(x).abs().max().item())


def test_activation_ranges_come_from_batchnorm_and_propagate_through_residual_additions():
    torch.manual_seed(0)
    model = randomized_batchnorm(create_model("resnet20"))
    k, bits = 6.0, 4
    q = quantize_model(model, None, bits, bn_k=k)
    bn1 = model.bn1
    stem = q.get_submodule("relu_quantizer")  # the stem's ReLU is the first call site
    assert stem.params.scale.item() == pytest.approx((bn1.bias + k * bn1.weight.abs()).max().item() / 15, rel=1e-6)
    block = model.stages[0][0]  # identity shortcut: range(out) = range(bn2) + range(relu(stem))
    upper = (block.bn2.bias + k * block.bn2.weight.abs()) + (bn1.bias + k * bn1.weight.abs()).clamp(min=0)
    quantizers = activation_quantizers(q)
    assert quantizers[2].params.scale.item() == pytest.approx(upper.max().item() / 15, rel=1e-6)


def test_calibrated_ranges_need_batches_and_use_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    with pytest.raises(UserError, match="calibration"):
        quantize_model(model, 8, 8)
    x = torch.randn(64, 5)
    q = quantize_model(model, 8, 8, batches=[(x, None)], act_range="minmax")
    high = torch.relu(q.get_submodule("0")(x)).max().item()  # calibrated on the quantized weights
    (quantizer,) = activation_quantizers(q)
    assert quantizer.params.scale.item() == pytest.approx(high / 255, rel=1e-5)


def tiny_net(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).to(dtype)


def penalty_of(model, x, y, penalty):
    with recorded_activations(model) as acts:
        loss = F.cross_entropy(model(x), y)
        return penalty(loss, [m.weight for m in model if isinstance(m, nn.Linear)], list(acts))


@pytest.mark.parametrize("penalty", [grad_l1, grad_l2])
def test_gradient_penalty_gradient_matches_finite_differences(penalty):
    model = tiny_net()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    value = penalty_of(model, x, y, penalty)
    assert value.item() > 0
    params = list(model.parameters())
    exact = torch.autograd.grad(value, params)
    eps = 1e-6
    for p, g in zip(params, exact):
        for index in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            with torch.no_grad():
                p[index] += eps
            plus = penalty_of(model, x, y, penalty).item()
            with torch.no_grad():
                p[index] -= 2 * eps
            minus = penalty_of(model, x, y, penalty).item()
            with torch.no_grad():
                p[index] += eps
            assert g[index].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("kind", ["l1", "l2", "dq"])
def test_regularizer_step_gradient_equals_gradient_of_loss_plus_penalty(kind):
    model = tiny_net()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    lam = 0.3
    penalties = {"l1": grad_l1, "l2": grad_l2, "dq": defensive_quantization}
    with recorded_activations(model) as acts:
        loss = F.cross_entropy(model(x), y)
        weights = [m.weight for m in model if isinstance(m, nn.Linear)]
        total = loss + lam * penalties[kind](loss, weights, list(acts) if kind != "dq" else [])
    expected = torch.autograd.grad(total, list(model.parameters()))
    with recorded_activations(model) as acts:
        Regularizer(kind, lam, acts)(F.cross_entropy(model(x), y), model)
    for p, e in zip(model.parameters(), expected):
        assert torch.allclose(p.grad, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_finite_difference_penalty_gradient_approaches_the_exact_one(kind):
    model = tiny_net()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    buffers = [b.clone() for b in model.buffers()]

    def gradients(method, **options):
        model.zero_grad(set_to_none=True)
        with recorded_activations(model) as acts:
            Regularizer(kind, 0.3, acts, method=method, **options)(
                F.cross_entropy(model(x), y), model, recompute=lambda: F.cross_entropy(model(x), y))
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    exact = gradients("exact")
    errors = [((gradients("finite-difference", fd_scale=s) - exact).norm() / exact.norm()).item()
              for s in (1e-2, 1e-4, 1e-6)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5  # O(ε): the error falls with ε
    assert all(torch.equal(b, a) for b, a in zip(model.buffers(), buffers))
    with pytest.raises(UserError, match="recompute"):
        with recorded_activations(model) as acts:
            Regularizer(kind, 0.3, acts, method="finite-difference")(F.cross_entropy(model(x), y), model)


def test_regularizer_waits_for_its_start_epoch():
    model = tiny_net()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    plain = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    with recorded_activations(model) as acts:
        Regularizer("l1", 1.0, acts, start_epoch=3)(F.cross_entropy(model(x), y), model, epoch=2)
        assert not acts
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), plain))


def test_first_order_loss_change_of_linf_perturbations_is_bounded_by_the_gradient_l1_norm():
    """Eq. 4.2: max over ‖Δ‖∞ ≤ δ of ⟨Δ, ∇L⟩ is δ‖∇L‖₁, attained at Δ = δ·sign(∇L)."""
    model = tiny_net()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    g = torch.cat([t.flatten() for t in grads])
    delta = 0.01
    bound = delta * g.abs().sum().item()
    generator = torch.Generator().manual_seed(1)
    for _ in range(200):
        d = (torch.rand(g.shape, generator=generator, dtype=torch.float64) * 2 - 1) * delta
        assert (d @ g).item() <= bound + 1e-15
    assert (delta * torch.sign(g) @ g).item() == pytest.approx(bound, rel=1e-12)
    # and for a small δ the first-order term predicts the actual loss change of that worst case
    small = 1e-5
    with torch.no_grad():
        before = F.cross_entropy(model(x), y).item()
        for p, t in zip(model.parameters(), grads):
            p += small * torch.sign(t)
        after = F.cross_entropy(model(x), y).item()
    assert after - before == pytest.approx(small * g.abs().sum().item(), rel=1e-3)


def test_defensive_quantization_is_zero_for_orthogonal_weights_and_quartic_in_scale():
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    assert defensive_quantization(None, [q, q[:4], q.T[:, :3]]).item() == pytest.approx(0, abs=1e-20)
    c = 1.3
    assert defensive_quantization(None, [c * torch.eye(5)]).item() == pytest.approx(5 * (c * c - 1) ** 2)


def test_ste_passes_gradients_straight_through_inside_the_grid_and_stops_where_clamped():
    q = params_for_range(Grid(3, "signed"), torch.tensor(-1.0), torch.tensor(1.0))
    x = torch.tensor([0.1, -0.33, 0.9, 1.5, -3.0], requires_grad=True)
    (fake_quantize(x, q) * torch.arange(1.0, 6.0)).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 0.0, 0.0]


def test_ste_model_trains_its_shadow_weights_and_can_be_regridded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(16, 5)
    q = quantize_model(model, 4, 8, batches=[(x, None)], act_range="minmax")
    shadow = q.get_submodule("0").parametrizations.weight.original
    with parametrize.cached():  # the quantized weight the layer uses, as one tensor
        quantized = q.get_submodule("0").weight
        g_shadow, g_quantized = torch.autograd.grad(q(x).square().sum(), [shadow, quantized])
    # min/max grids clamp nothing, so the STE hands the shadow weight exactly the quantized weight's gradient
    assert torch.equal(g_shadow, g_quantized) and g_shadow.abs().sum() > 0
    assert not torch.equal(q.get_submodule("0").weight, shadow)
    requantize_weights(q, 8)
    assert quantized_layer_params(q)["0"].grid.bits == 8
    assert torch.equal(q.get_submodule("0").parametrizations.weight.original, shadow)


def test_induced_loss_is_predicted_by_the_first_order_term_for_fine_grids():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    fine = induced_loss(model, x, y, bits=12, samples=10)
    for actual, first in zip(fine["actual"], fine["first_order"]):
        assert math.isclose(actual, first, rel_tol=0.2, abs_tol=1e-6)
    coarse = induced_loss(model, x, y, bits=2, samples=10)
    assert max(map(abs, coarse["actual"])) > max(map(abs, fine["actual"]))


# Devices (issue 16): under ``torch.device("meta")`` a tensor made without an explicit device is a
# meta tensor, so a step that forgets ``device=`` fails on the CPU as it would with a model on a GPU.
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def lenet_and_data():
    from metacompress.data import load_classification
    from metacompress.models import ModelSpec
    from metacompress.quantization.diagnostics import test_batches

    train_data = load_classification("mnist-sample", "train").subset(slice(0, 192))
    test_data = load_classification("mnist-sample", "test").subset(slice(0, 100))
    torch.manual_seed(0)
    model = create_model("lenet5", 10, 1, 28)
    return model, ModelSpec("lenet5", 10, 1, 28), train_data, test_data, [next(test_batches(train_data, 64))]


@pytest.mark.parametrize("options", [{}, {"act_range": "mse", "weight_range": "mse", "per_channel": True}],
                         ids=["bn-minmax", "mse-per-channel"])
def test_quantization_and_diagnostics_make_their_tensors_where_the_model_is(options):
    from metacompress.quantization.diagnostics import gradient_norms, quantization_kl

    model, _, _, test_data, calibration = lenet_and_data()
    bn_model = randomized_batchnorm(create_model("resnet20"))
    x, y = calibration[0]
    with torch.device("meta"):
        q = quantize_model(model, 4, 4, calibration, **options)
        quantize_model(bn_model, 4, 4, **({} if options else {"per_channel": True}))
        requantize_weights(q, 6, per_channel=True, method=options.get("weight_range", "minmax"))
        norms = gradient_norms(model, test_data, 50)
        kl = quantization_kl(model, q, test_data, 50)
        induced = induced_loss(model, x, y, bits=4, samples=2)
    assert {b.device.type for b in q.buffers()} == {"cpu"}
    assert len(norms["l1"]) == len(kl) == 2 and len(induced["actual"]) == 2


def test_grids_are_buffers_that_follow_the_model_but_stay_out_of_its_state_dict():
    model, _, _, _, calibration = lenet_and_data()
    q = quantize_model(model, 4, 4, calibration)
    keys = set(q.state_dict())
    grids = [m for m in q.modules() if m.__class__.__name__ == "FakeQuantizer"]
    assert grids and all({"scale", "zero_point"} <= {n for n, _ in m.named_buffers()} for m in grids)
    assert not any(k.endswith(("scale", "zero_point")) for k in keys)
    q.to(torch.device("cpu", 0))
    assert set(q.state_dict()) == keys and quantized_layer_params(q)["conv1"].grid.bits == 4


def test_ste_finetune_and_diagnostics_with_device_cpu_change_nothing():
    from metacompress.quantization.diagnostics import gradient_norms, quantization_kl
    from metacompress.quantization.qat import ste_finetune
    from metacompress.training import TrainConfig

    model, spec, train_data, test_data, calibration = lenet_and_data()
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, milestones=())
    default = ste_finetune(model, 4, 4, spec, train_data, {}, config, calibration)
    on_cpu = ste_finetune(model, 4, 4, spec, train_data, {}, config, calibration, device=torch.device("cpu", 0))
    expected = default.state_dict()
    assert all(torch.equal(t, expected[k]) for k, t in on_cpu.state_dict().items())
    assert gradient_norms(model, test_data, 50) == gradient_norms(model, test_data, 50, device="cpu")
    assert quantization_kl(model, default, test_data, 50) == quantization_kl(model, default, test_data, 50,
                                                                             device="cpu")
    x, y = calibration[0]
    assert induced_loss(model, x, y, samples=3) == induced_loss(model, x, y, samples=3, device="cpu")


@cuda
@pytest.mark.cuda
def test_ste_finetune_and_diagnostics_on_cuda(monkeypatch):
    """STE fine-tuning trains on the GPU from the CPU's grids; the diagnostics of one network agree
    across devices up to float rounding (the induced-loss perturbations are the same draws)."""
    from metacompress.quantization.diagnostics import gradient_norms, quantization_kl
    from metacompress.quantization.qat import ste_finetune
    from metacompress.training import TrainConfig, evaluate

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model, spec, train_data, test_data, calibration = lenet_and_data()
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, milestones=())
    on_cpu = ste_finetune(model, 4, 4, spec, train_data, {}, config, calibration)
    on_gpu = ste_finetune(model, 4, 4, spec, train_data, {}, config, calibration, device="cuda")
    assert all(t.is_cuda for t in [*on_gpu.parameters(), *on_gpu.buffers()])
    assert next(model.parameters()).device.type == "cpu"  # the float model is left where it was
    grids_cpu, grids_gpu = quantized_layer_params(on_cpu), quantized_layer_params(on_gpu)
    assert all(grids_gpu[n].scale.is_cuda for n in grids_gpu)
    accuracy = evaluate(on_gpu, test_data)["accuracy"]
    assert abs(accuracy - evaluate(on_cpu, test_data)["accuracy"]) <= 0.1
    requantize_weights(on_gpu, 8)
    assert evaluate(on_gpu, test_data)["accuracy"] >= 0  # regridded where it lives

    quantized = quantize_model(model, 4, 4, calibration)
    reference = {"norms": gradient_norms(model, test_data, 50), "kl": quantization_kl(model, quantized, test_data, 50)}
    x, y = calibration[0]
    reference["induced"] = induced_loss(model, x, y, samples=3)
    gpu_model, gpu_quantized = copy.deepcopy(model), copy.deepcopy(quantized)
    got = {"norms": gradient_norms(gpu_model, test_data, 50, device="cuda"),
           "kl": quantization_kl(gpu_model, gpu_quantized, test_data, 50, device="cuda")}
    got["induced"] = induced_loss(gpu_model, x, y, samples=3)  # x, y move to the model's device
    assert next(gpu_quantized.parameters()).is_cuda
    assert got["norms"]["l1"] == pytest.approx(reference["norms"]["l1"], rel=1e-3)
    assert got["kl"] == pytest.approx(reference["kl"], rel=0.05, abs=1e-5)
    assert got["induced"]["first_order"] == pytest.approx(reference["induced"]["first_order"], rel=1e-2, abs=1e-6)


def test_induced_loss_leaves_the_weights_exactly_as_they_were():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    induced_loss(model, torch.randn(64, 8), torch.randint(0, 3, (64,)), bits=4, samples=5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
