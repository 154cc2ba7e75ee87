"""Meta-SGD (issue 17, lever 3): per-dimension inner learning rates, learned by the outer loop."""

import json
from dataclasses import replace

import pytest
import torch

from metacompress.errors import FormatError, UserError
from metacompress.inr.base_config import BaseConfig
from metacompress.inr.base_network import BaseNetwork, build_model, load_base, save_base
from metacompress.inr.metalearning import MetaConfig, fit_latents, meta_loss, meta_train
from metacompress.inr.siren import ModulatedSiren
from metacompress.modalities.spec import DataSpec


def pair(seed=0, lr=0.3):
    """A plain model and a Meta-SGD one with the same weights, its rates all ``lr``."""
    torch.manual_seed(seed)
    plain = ModulatedSiren(2, 4, 2, 1, 3, w0=3.0).double()
    learned = ModulatedSiren(2, 4, 2, 1, 3, w0=3.0, meta_sgd=True, inner_lr=lr).double()
    learned.load_state_dict(plain.state_dict() | {"inner_lrs": learned.inner_lrs.detach()})
    return plain, learned


def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(5, 2, generator=g, dtype=torch.float64), torch.rand(2, 5, 1, generator=g, dtype=torch.float64)


def test_equal_rates_step_exactly_like_the_plain_inner_loop():
    plain, learned = pair(lr=0.3)
    coords, features = data()
    assert torch.allclose(fit_latents(plain, coords, features, 3, 0.3),
                          fit_latents(learned, coords, features, 3, 123.0), atol=1e-14)  # its own rates win


def test_each_dimension_steps_at_its_own_rate():
    _, learned = pair()
    with torch.no_grad():
        learned.inner_lrs.copy_(torch.tensor([0.0, 0.3, -1.0], dtype=torch.float64))
    coords, features = data()
    latents = fit_latents(learned, coords, features, 1, 0.3)
    # rate 0 (and a negative rate, clipped to 0) leave their dimension at its start
    assert torch.equal(latents[:, 0], torch.zeros(2)) and torch.equal(latents[:, 2], torch.zeros(2))
    assert latents[:, 1].abs().min() > 0


def test_the_meta_gradient_of_the_rates_matches_finite_differences():
    _, learned = pair(lr=0.4)
    coords, features = data()
    (grad,) = torch.autograd.grad(meta_loss(learned, coords, features, 2, 0.4), [learned.inner_lrs])
    eps, numeric = 1e-6, torch.zeros(3, dtype=torch.float64)
    rates = learned.inner_lrs.data
    for i in range(3):
        rates[i] += eps
        up = meta_loss(learned, coords, features, 2, 0.4).item()
        rates[i] -= 2 * eps
        down = meta_loss(learned, coords, features, 2, 0.4).item()
        rates[i] += eps
        numeric[i] = (up - down) / (2 * eps)
    assert grad.abs().max() > 1e-6 and torch.allclose(grad, numeric, rtol=1e-5, atol=1e-10), (grad, numeric)


def sampler():
    x = torch.linspace(-1, 1, 16).unsqueeze(-1)

    def sample(n, generator):
        return x, torch.sin(4 * x + torch.rand(n, 1, 1, generator=generator) * 6.28)
    return sample


def test_meta_training_moves_the_rates_and_a_plain_run_cannot_resume_as_meta_sgd(tmp_path):
    config = MetaConfig(iterations=6, batch_size=4, inner_lr=1e-2, outer_lr=1e-3, checkpoint_every=3)
    torch.manual_seed(0)
    model = ModulatedSiren(1, 8, 2, 1, 4, w0=10.0, meta_sgd=True)
    meta_train(model, sampler(), config)
    assert not torch.allclose(model.inner_lrs.detach(), torch.full((4,), 1e-2))
    meta_train(ModulatedSiren(1, 8, 2, 1, 4, w0=10.0), sampler(), replace(config, iterations=3), out_dir=tmp_path)
    with pytest.raises(UserError, match="--meta-sgd"):
        meta_train(ModulatedSiren(1, 8, 2, 1, 4, w0=10.0, meta_sgd=True), sampler(), config, out_dir=tmp_path,
                   resume=True)


CONFIG = BaseConfig(DataSpec("image", 3, (32, 32), value_range=((0.0, 255.0),) * 3), in_dim=2, width=8, depth=3,
                    latent_dim=4, w0=30.0, inner_lr=0.05, meta_sgd=True)


def test_a_meta_sgd_base_round_trips_with_its_rates(tmp_path):
    torch.manual_seed(0)
    model = build_model(CONFIG)
    assert torch.equal(model.inner_lrs.detach(), torch.full((4,), 0.05))  # starts at the stored inner_lr
    with torch.no_grad():
        model.inner_lrs.copy_(torch.tensor([0.01, 0.02, 0.03, 0.04]))
    digest = save_base(tmp_path / "base", BaseNetwork(model, CONFIG))
    loaded = load_base(tmp_path / "base")
    assert loaded.hash == digest and torch.equal(loaded.model.inner_lrs, model.inner_lrs)
    assert json.loads((tmp_path / "base.json").read_text())["config"]["meta_sgd"] is True
    plain = CONFIG.replace(meta_sgd=False)
    assert "meta_sgd" not in plain.to_dict()  # older descriptions keep their bytes and hash
    with pytest.raises(FormatError, match="'meta_sgd' must be true or false"):
        BaseConfig.from_dict(CONFIG.to_dict() | {"meta_sgd": 1})


def test_a_resumed_run_takes_a_new_outer_learning_rate(tmp_path):
    config = MetaConfig(iterations=4, batch_size=4, inner_lr=1e-2, outer_lr=1e-3, checkpoint_every=2)

    def run(outer_lr, out_dir=None, resume=False, iterations=4):
        torch.manual_seed(0)
        model = ModulatedSiren(1, 8, 2, 1, 4, w0=10.0)
        meta_train(model, sampler(), replace(config, outer_lr=outer_lr, iterations=iterations), out_dir=out_dir,
                   resume=resume)
        return model

    import shutil

    run(1e-3, tmp_path / "a", iterations=2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    same, changed = run(1e-3, tmp_path / "a", resume=True), run(1e-2, tmp_path / "b", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(same.parameters(), run(1e-3).parameters()))  # same rate: exact resume
    assert not all(torch.equal(a, b) for a, b in zip(same.parameters(), changed.parameters()))
