import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metacompress.errors import UserError
from metacompress.models import ModelSpec, create_model
from metacompress.pruning import METHODS, full_masks, mask_enforcer, prune_at_init
from metacompress.pruning.criteria import grasp, prospr, snip, synflow


def tiny_net(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def tiny_batches(n=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, generator=g, dtype=dtype), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def test_prospr_with_zero_steps_is_exactly_snip():
    model, batches = tiny_net(), tiny_batches()
    masks = full_masks(model)
    a = prospr.score(model, masks, batches, steps=0)
    b = snip.score(model, masks, batches)
    assert all(torch.equal(a[n], b[n]) for n in masks)


def loss_after_steps(model, c, batches, lr, momentum, weight_decay):
    """Reference L(w_M(c)): plain autograd per step, no graph through the updates."""
    params = {n: (p.detach() * c[n] if n in c else p.detach().clone()) for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    velocity = {}
    for x, y in batches[:-1]:
        params = {n: w.detach().requires_grad_(True) for n, w in params.items()}
        loss = F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for (n, w), g in zip(list(params.items()), grads):
                d = g + weight_decay * w
                velocity[n] = d if n not in velocity else momentum * velocity[n] + d
                params[n] = w - lr * velocity[n]
    x, y = batches[-1]
    with torch.no_grad():
        return F.cross_entropy(functional_call(model, (params, buffers), (x,)), y).item()


def test_meta_gradient_matches_central_finite_differences():
    model, batches = tiny_net(), tiny_batches(4)
    masks = full_masks(model)
    lr, momentum, wd = 0.5, 0.9, 5e-3
    meta = prospr.meta_gradient(model, masks, batches, lr, momentum, wd)
    eps = 1e-6
    worst = 0.0
    for name in masks:
        for index in [(0, 0), (2, 3), (1, 5)] if masks[name].shape[1] > 4 else [(0, 0), (2, 3), (5, 1)]:
            plus = {n: m.clone() for n, m in masks.items()}
            minus = {n: m.clone() for n, m in masks.items()}
            plus[name][index] += eps
            minus[name][index] -= eps
            fd = (loss_after_steps(model, plus, batches, lr, momentum, wd)
                  - loss_after_steps(model, minus, batches, lr, momentum, wd)) / (2 * eps)
            worst = max(worst, abs(fd - meta[name][index].item()) / max(abs(fd), 1e-8))
    assert worst < 1e-3
    # and three steps of training really change the answer (the test would be vacuous otherwise)
    snip_g = snip.mask_gradient(model, masks, batches[-1:])
    assert not torch.allclose(snip_g["0.weight"], meta["0.weight"], rtol=1e-2)


def test_first_order_is_final_gradient_times_initial_weights():
    model, batches = tiny_net(), tiny_batches(4)
    masks = full_masks(model)
    scores = prospr.score(model, masks, batches, steps=3, lr=0.1, momentum=0.9, weight_decay=5e-4, first_order=True)
    trained = copy.deepcopy(model)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for x, y in batches[:3]:
        optimizer.zero_grad()
        F.cross_entropy(trained(x), y).backward()
        optimizer.step()
    trained.zero_grad()
    F.cross_entropy(trained(batches[3][0]), batches[3][1]).backward()
    params = dict(model.named_parameters())
    for name, p in trained.named_parameters():
        if name in masks:
            torch.testing.assert_close(scores[name], (p.grad * params[name].detach()).abs())


def test_grasp_matches_explicit_hessian_on_two_layer_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2, bias=False)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 0, 1])
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    sizes = (w1.numel(), w2.numel())

    def loss(flat):
        a, b = flat[:sizes[0]].view_as(w1), flat[sizes[0]:].view_as(w2)
        return F.cross_entropy(torch.tanh(x @ a.T) @ b.T / 200.0, y)

    flat = torch.cat([w1.flatten(), w2.flatten()])
    g = torch.autograd.functional.jacobian(loss, flat)
    h = torch.autograd.functional.hessian(loss, flat)
    expected = flat * (h @ g)
    scores = grasp.score(model, full_masks(model), [(x, y)], samples_per_class=3, num_classes=2)
    torch.testing.assert_close(scores["0.weight"].flatten(), expected[:sizes[0]])
    torch.testing.assert_close(scores["2.weight"].flatten(), expected[sizes[0]:])


def test_synflow_matches_hand_computed_path_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    a, b = model[0].weight.detach().abs().double(), model[2].weight.detach().abs().double()
    scores = synflow.score(model, full_masks(model), input_shape=(3,))
    # R = 1ᵀ|W2||W1|1: ∂R/∂|W1|_ij = Σ_k |W2|_ki, ∂R/∂|W2|_ki = Σ_j |W1|_ij
    torch.testing.assert_close(scores["0.weight"], a * b.sum(0)[:, None])
    torch.testing.assert_close(scores["2.weight"], b * a.sum(1)[None, :])


def mnist_like_batches(n=3, size=16):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 1, 28, 28, generator=g), torch.arange(size) % 10) for _ in range(n)]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_hits_the_requested_sparsity_exactly(method):
    torch.manual_seed(0)
    model = create_model("lenet5", 10, 1, 28)
    options = {"rounds": 4} if method in ("synflow", "iter-snip", "force") else {}
    if method == "grasp":
        options |= {"samples_per_class": 1, "num_classes": 10}
    result = prune_at_init(model, mnist_like_batches(), method, 0.9, **options)
    total = sum(m.numel() for m in result.masks.values())
    kept = sum(int(m.sum()) for m in result.masks.values())
    assert abs(kept - round(0.1 * total)) <= 1
    assert result.sparsity == pytest.approx(0.9, abs=1 / total)
    params = dict(model.named_parameters())
    assert all(torch.all(params[n][m == 0] == 0) for n, m in result.masks.items())
    if method == "random":  # uniform per layer
        assert all(abs(f - 0.1) < 0.01 for f in result.kept.values())


def test_excluded_layers_are_not_pruned_and_bad_input_is_rejected():
    model = create_model("lenet5", 10, 1, 28)
    result = prune_at_init(model, mnist_like_batches(), "snip", 0.5, exclude=["fc3"])
    assert "fc3.weight" not in result.masks
    with pytest.raises(UserError, match=r"sparsity must be in \[0, 1\)"):
        prune_at_init(model, mnist_like_batches(), "snip", 1.0)
    with pytest.raises(UserError, match="no prunable"):
        prune_at_init(nn.Sequential(nn.ReLU()), mnist_like_batches(), "snip", 0.5)
    with pytest.raises(UserError, match="loader is empty"):
        prune_at_init(model, [], "snip", 0.5)
    with pytest.raises(UserError, match="do not fit the model"):
        prune_at_init(model, [(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))], "snip", 0.5)
    with pytest.raises(UserError, match="unknown pruning method"):
        prune_at_init(model, mnist_like_batches(), "oracle", 0.5)


def test_pruned_weights_stay_zero_through_training_with_momentum_and_weight_decay(tmp_path):
    from metacompress.data import load_classification
    from metacompress.training import TrainConfig, load_model, save_model, train

    data = load_classification("mnist-sample", "train").subset(slice(0, 512))
    spec = ModelSpec("lenet5", 10, 1, 28)
    torch.manual_seed(0)
    model = create_model("lenet5", 10, 1, 28)
    x = (data.images[:64].float() / 255 - 0.1307) / 0.3081
    result = prune_at_init(model, [(x, data.labels[:64])], "prospr", 0.8, steps=1)
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4)
    trained = train(spec, data, {}, config, model=model, progress=False, after_step=mask_enforcer(result.masks)).model
    save_model(tmp_path / "pruned", trained, spec, data)
    reloaded, _ = load_model(tmp_path / "pruned")
    params = dict(reloaded.named_parameters())
    for name, mask in result.masks.items():
        assert torch.all(params[name][mask == 0] == 0)
        assert torch.count_nonzero(params[name]) == int(mask.sum())  # the kept weights did train


# Devices (issue 16). Under ``torch.device("meta")`` every tensor made without an explicit device is
# a meta tensor, so a criterion that forgets ``device=`` fails exactly as it would with a model on a GPU.
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def method_options(method):
    options = {"rounds": 3} if method in ("synflow", "iter-snip", "force") else {}
    return options | ({"samples_per_class": 1, "num_classes": 10} if method == "grasp" else {})


def fresh_lenet():
    torch.manual_seed(0)
    return create_model("lenet5", 10, 1, 28)


@pytest.mark.parametrize("method", METHODS)
def test_every_criterion_makes_its_tensors_where_the_model_is(method):
    model, batches = fresh_lenet(), mnist_like_batches()
    with torch.device("meta"):
        result = prune_at_init(model, batches, method, 0.8, **method_options(method))
    assert {m.device.type for m in result.masks.values()} == {"cpu"}
    assert {s.device.type for s in result.scores.values()} == {"cpu"}


@pytest.mark.parametrize("method", METHODS)
def test_device_cpu_passes_through_and_changes_nothing(method):
    default = prune_at_init(fresh_lenet(), mnist_like_batches(), method, 0.8, **method_options(method))
    model = fresh_lenet()
    on_cpu = prune_at_init(model, mnist_like_batches(), method, 0.8, device="cpu", **method_options(method))
    assert next(model.parameters()).device.type == "cpu"
    assert all(torch.equal(default.masks[n], on_cpu.masks[n]) for n in default.masks)
    assert all(torch.equal(default.scores[n], on_cpu.scores[n]) for n in default.scores)


@pytest.mark.parametrize("structured", [False, True], ids=["random", "3sp"])
def test_prune_and_train_with_device_cpu_is_the_default_run(structured):
    from metacompress.pruning.experiment import PruneSettings, prune_and_train
    from metacompress.recipes import load_experiment_data, spec_for
    from metacompress.training import TrainConfig

    train_data, eval_sets = load_experiment_data("mnist-sample", None)
    train_data = train_data.subset(slice(0, 256))
    spec = spec_for("lenet5", train_data)
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, milestones=())
    settings = PruneSettings("3sp", 0.5, structured=True) if structured else PruneSettings("random", 0.8)
    default, default_pruned = prune_and_train(spec, train_data, eval_sets, config, settings, progress=False)
    on_cpu, cpu_pruned = prune_and_train(spec, train_data, eval_sets, config, settings, progress=False,
                                         device=torch.device("cpu", 0))
    assert [r["test_accuracy"] for r in on_cpu.history] == [r["test_accuracy"] for r in default.history]
    masks, expected = (cpu_pruned.keep, default_pruned.keep) if structured else (cpu_pruned.masks, default_pruned.masks)
    assert all(torch.equal(masks[k], expected[k]) for k in expected)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("method", METHODS)
def test_every_criterion_prunes_on_cuda_as_on_the_cpu(method, monkeypatch):
    """Random and magnitude masks are identical; the gradient criteria agree up to float rounding,
    which can only swap weights scored near the threshold (TF32 convolutions off, to keep it small)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    reference = prune_at_init(fresh_lenet(), mnist_like_batches(), method, 0.8, **method_options(method))
    model = fresh_lenet()
    result = prune_at_init(model, mnist_like_batches(), method, 0.8, device="cuda", **method_options(method))
    assert next(model.parameters()).is_cuda and all(m.is_cuda for m in result.masks.values())
    params = dict(model.named_parameters())
    assert all(torch.all(params[n][m == 0] == 0) for n, m in result.masks.items())
    assert result.sparsity == pytest.approx(reference.sparsity, abs=1e-9)
    total = sum(m.numel() for m in reference.masks.values())
    differing = sum(int((result.masks[n].cpu() != m).sum()) for n, m in reference.masks.items())
    if method in ("random", "magnitude"):
        assert differing == 0
    else:
        assert differing <= 0.02 * total, f"{differing} of {total} mask entries differ"
        if method not in ("synflow", "iter-snip", "force"):  # one round: the same weights were scored
            for n, s in reference.scores.items():
                torch.testing.assert_close(result.scores[n].cpu(), s, rtol=1e-2, atol=1e-3 * s.abs().max().item())
