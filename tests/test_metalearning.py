"""Modulated SIREN and the meta-learning loops of COIN++ (thesis Eqs. 5.4, 5.9, 5.10)."""

import math
from dataclasses import replace

import pytest
import torch

from metacompress.errors import UserError
from metacompress.inr.metalearning import MetaConfig, fit_latents, meta_loss, meta_train, per_sample_mse
from metacompress.inr.siren import ModulatedSiren


def tiny_model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return ModulatedSiren(in_dim=2, width=4, depth=2, out_dim=1, latent_dim=3, w0=3.0).to(dtype)


def test_shifts_enter_every_sine_layer():
    model = tiny_model()
    coords, latents = torch.rand(5, 2, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    shifts = model.latent_to_shifts(latents).view(2, 2, 4)
    expected = []
    for b in range(2):
        h = coords
        for i, layer in enumerate(model.base.hidden):
            h = torch.sin(3.0 * (h @ layer.weight.T + layer.bias + shifts[b, i]))
        expected.append(h @ model.base.last.weight.T + model.base.last.bias)
    assert torch.allclose(model(coords, latents), torch.stack(expected), atol=1e-12)


def test_inner_step_of_a_datapoint_does_not_depend_on_the_batch():
    model = tiny_model()
    coords = torch.rand(6, 2, dtype=torch.float64)
    features = torch.rand(3, 6, 1, dtype=torch.float64)
    together = fit_latents(model, coords, features, steps=3, inner_lr=0.1)
    alone = fit_latents(model, coords, features[:1], steps=3, inner_lr=0.1)
    assert torch.allclose(together[:1], alone, atol=1e-12) and together.abs().sum() > 0


def test_meta_gradient_matches_finite_differences():
    model = tiny_model()
    coords = torch.rand(5, 2, dtype=torch.float64) * 2 - 1
    features = torch.rand(2, 5, 1, dtype=torch.float64)

    def loss():
        return meta_loss(model, coords, features, steps=2, inner_lr=0.5)

    params = list(model.parameters())
    grads = torch.autograd.grad(loss(), params)
    first_order = torch.autograd.grad(meta_loss(model, coords, features, steps=2, inner_lr=0.5, first_order=True),
                                      params)
    eps = 1e-6
    for p, g in zip(params, grads):
        numeric = torch.zeros_like(p)
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            saved = flat[i].item()
            flat[i] = saved + eps
            up = loss().item()
            flat[i] = saved - eps
            down = loss().item()
            flat[i] = saved
            numeric.view(-1)[i] = (up - down) / (2 * eps)
        assert torch.allclose(g, numeric, rtol=1e-5, atol=1e-9), (g, numeric)
    differs = sum((g - f).abs().sum() for g, f in zip(grads, first_order))
    assert differs > 1e-6  # the second-order terms matter: first-order is a different gradient


def test_checkpointed_inner_steps_give_the_same_meta_gradient():
    model = tiny_model()
    coords, features = torch.rand(9, 2, dtype=torch.float64), torch.rand(3, 9, 1, dtype=torch.float64)
    params = list(model.parameters())
    plain = torch.autograd.grad(meta_loss(model, coords, features, 3, 0.3), params)
    recomputed = torch.autograd.grad(meta_loss(model, coords, features, 3, 0.3, checkpoint_steps=True), params)
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-15) for a, b in zip(plain, recomputed))


def test_meta_training_makes_a_few_steps_enough():
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 32).unsqueeze(-1)  # (points, 1)

    def batch(n):
        phase, amp = torch.rand(n, 1, 1) * 6.28, 0.5 + 0.5 * torch.rand(n, 1, 1)
        return amp * torch.sin(4 * x + phase)  # (n, points, 1)

    model = ModulatedSiren(in_dim=1, width=32, depth=2, out_dim=1, latent_dim=8, w0=10.0)
    validation = batch(32)
    before = per_sample_mse(model, x, validation, fit_latents(model, x, validation, 3, 1e-2)).mean().item()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = meta_loss(model, x, batch(16), steps=3, inner_lr=1e-2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = per_sample_mse(model, x, validation, fit_latents(model, x, validation, 3, 1e-2)).mean().item()
    without_inner_loop = per_sample_mse(model, x, validation, torch.zeros(32, 8)).mean().item()
    assert after < before / 100 and after < without_inner_loop / 100  # measured: ~1/1500 of both


def sine_sampler(points=16):
    x = torch.linspace(-1, 1, points).unsqueeze(-1)

    def sample(n, generator):
        phase = torch.rand(n, 1, 1, generator=generator) * 6.28
        return x, torch.sin(4 * x + phase)

    return sample


def test_meta_train_resumes_exactly(tmp_path):
    config = MetaConfig(iterations=12, batch_size=4, inner_lr=1e-2, outer_lr=1e-3, checkpoint_every=6)

    def fresh():
        torch.manual_seed(0)
        return ModulatedSiren(1, 8, 2, 1, 4, w0=10.0)

    straight = fresh()
    history = meta_train(straight, sine_sampler(), config)
    assert len(history) == 12 and not any(h["skipped"] for h in history)
    interrupted = fresh()
    meta_train(interrupted, sine_sampler(), replace(config, iterations=6), out_dir=tmp_path)
    resumed = fresh()
    history2 = meta_train(resumed, sine_sampler(), config, out_dir=tmp_path, resume=True)
    assert [h["loss"] for h in history2] == [h["loss"] for h in history]
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="batch_size"):
        meta_train(fresh(), sine_sampler(), replace(config, batch_size=8), out_dir=tmp_path, resume=True)


def test_the_learning_curve_is_recorded_and_survives_a_resume(tmp_path):
    config = MetaConfig(iterations=10, batch_size=4, inner_lr=1e-2, outer_lr=1e-3, checkpoint_every=4,
                        validate_every=4)
    seen = []

    def validate(model):
        seen.append(sum(float(p.sum()) for p in model.parameters()))
        return {"probe": seen[-1]}

    def fresh():
        torch.manual_seed(0)
        return ModulatedSiren(1, 8, 2, 1, 4, w0=10.0)

    straight = meta_train(fresh(), sine_sampler(), config, validate=validate)
    assert [h["iteration"] for h in straight if "val" in h] == [4, 8, 10]  # every 4 steps and the last
    expected = {h["iteration"]: h["val"] for h in straight if "val" in h}
    meta_train(fresh(), sine_sampler(), replace(config, iterations=5), out_dir=tmp_path, validate=validate)
    resumed = meta_train(fresh(), sine_sampler(), config, out_dir=tmp_path, resume=True, validate=validate)
    # the curve spans both stretches (plus a point where the first one stopped)
    assert {h["iteration"]: h["val"] for h in resumed if "val" in h} == expected | {5: resumed[4]["val"]}
    assert all("val" not in h for h in meta_train(fresh(), sine_sampler(), replace(config, validate_every=0),
                                                  validate=validate))
    with pytest.raises(UserError, match="--validate-every"):
        replace(config, validate_every=-1)


def test_meta_train_skips_non_finite_and_spiking_steps():
    torch.manual_seed(0)
    model = ModulatedSiren(1, 8, 2, 1, 4, w0=10.0)
    good = sine_sampler()

    def sometimes_bad(n, generator):
        x, y = good(n, generator)
        step = int(torch.randint(0, 1_000_000, (1,), generator=generator))
        if step % 7 == 0:
            return x, y * float("nan")
        return x, y

    history = meta_train(model, sometimes_bad, MetaConfig(iterations=30, batch_size=4, outer_lr=1e-3))
    nan_steps = [h for h in history if not math.isfinite(h["loss"])]
    assert nan_steps and all(h["skipped"] for h in nan_steps)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_meta_train_skips_a_loss_spike():
    torch.manual_seed(0)
    model = ModulatedSiren(1, 8, 2, 1, 4, w0=10.0)
    good, calls = sine_sampler(), []

    def spike_at_15(n, generator):
        x, y = good(n, generator)
        calls.append(1)
        return (x, y * 1000) if len(calls) == 15 else (x, y)

    weights = {}

    def record(iteration, loss):
        weights[iteration] = [p.detach().clone() for p in model.parameters()]

    history = meta_train(model, spike_at_15, MetaConfig(iterations=20, batch_size=4, outer_lr=1e-3), progress=record)
    assert history[14]["skipped"] and not any(h["skipped"] for h in history[:14] + history[15:])
    assert all(torch.equal(a, b) for a, b in zip(weights[14], weights[15]))  # the spike changed nothing
