import numpy as np
import pytest
import torch

from metacompress.codecs.latent_quantizer import LatentQuantizer
from metacompress.errors import FormatError, UserError


def test_bins_span_three_stds_and_decode_to_centres():
    q = LatentQuantizer(mean=1.0, std=0.5, bits=2)  # range [-0.5, 2.5], bins of 0.75
    latents = torch.tensor([-9.0, -0.5, 0.24, 0.26, 1.0, 2.49, 7.0])
    symbols = q.symbols(latents)
    assert symbols.tolist() == [0, 0, 0, 1, 2, 3, 3]
    assert torch.allclose(q.values(symbols), torch.tensor([-0.125, -0.125, -0.125, 0.625, 1.375, 2.125, 2.125]))


@pytest.mark.parametrize("bits", [3, 5, 8])
def test_error_inside_the_range_is_at_most_half_a_bin(bits):
    torch.manual_seed(0)
    latents = torch.randn(10_000) * 0.7 + 0.2
    q = LatentQuantizer.fit(latents, bits)
    assert q.mean == pytest.approx(0.2, abs=0.02) and q.std == pytest.approx(0.7, rel=0.02)
    inside = (latents - q.mean).abs() < 3 * q.std
    error = (q.values(q.symbols(latents)) - latents).abs()
    assert error[inside].max() <= q.bin_width / 2 + 1e-6
    assert len(np.unique(q.symbols(latents))) <= 2 ** bits


def test_more_bits_less_error():
    torch.manual_seed(1)
    latents = torch.randn(5_000)
    errors = [(LatentQuantizer.fit(latents, b).values(LatentQuantizer.fit(latents, b).symbols(latents)) - latents)
              .pow(2).mean().item() for b in range(3, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:]))


def test_json_round_trip_and_bad_input():
    q = LatentQuantizer(0.1, 2.0, 5)
    assert LatentQuantizer.from_json(q.to_json()) == q
    with pytest.raises(FormatError):
        LatentQuantizer.from_json({"mean": 0.0, "std": -1.0, "bits": 5})
    with pytest.raises(UserError):
        LatentQuantizer(0.0, 1.0, 0)
    with pytest.raises(FormatError, match="outside"):
        q.values(np.array([32]))


def spread_latents(seed=0):
    """Dimensions whose spreads differ 8× (a trained base's differ ~6×) and whose means differ."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4_000, 4, generator=g) * torch.tensor([0.1, 0.2, 0.4, 0.8]) + torch.tensor([0.0, 1.0, -1.0, 2.0])


def test_a_per_dimension_quantizer_bins_each_dimension_over_its_own_range():
    latents = spread_latents()
    q = LatentQuantizer.fit(latents, 4, per_dimension=True)
    assert q.per_dimension and len(q.mean) == 4
    np.testing.assert_allclose(q.std, [0.1, 0.2, 0.4, 0.8], rtol=0.05)
    error = (q.values(q.symbols(latents)) - latents).abs()
    inside = ((latents - torch.tensor(q.mean)).abs() < 3 * torch.tensor(q.std)).float()
    # each dimension's error is at most half of its own bin, not of one shared bin
    assert torch.all(error * inside <= torch.tensor(q.bin_width) / 2 + 1e-6)
    pooled = LatentQuantizer.fit(latents, 4)
    mse = lambda quantizer: (quantizer.values(quantizer.symbols(latents)) - latents).pow(2).mean().item()  # noqa: E731
    assert mse(q) < mse(pooled) / 3  # measured: ~1/10


def test_a_per_dimension_quantizer_round_trips_and_refuses_symbols_of_another_width():
    q = LatentQuantizer.fit(spread_latents(), 3, per_dimension=True)
    assert LatentQuantizer.from_json(json_round_trip(q.to_json())) == q
    with pytest.raises(FormatError, match="do not have 4 dimensions"):
        q.values(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(UserError, match="one mean and one std"):
        LatentQuantizer((0.0, 1.0), (1.0,), 3)
    z = spread_latents(1)[:8]
    np.testing.assert_allclose(q.denormalize(q.normalize(z)), z, atol=1e-6)


def json_round_trip(data):
    import json
    return json.loads(json.dumps(data))
