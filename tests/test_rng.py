"""Library calls that seed torch give the caller's random state back (issue 16)."""

import numpy as np
import torch
from torch import nn

from metacompress.codecs.coin import CoinConfig, encode_image
from metacompress.pruning.structured import reinitialize
from metacompress.rng import keeps_global_rng


def test_a_seeded_library_call_leaves_the_global_generator_alone():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = encode_image(image, CoinConfig(depth=1, width=4, iterations=2, seed=5)).data
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream continues untouched
    torch.manual_seed(999)
    assert encode_image(image, CoinConfig(depth=1, width=4, iterations=2, seed=5)).data == first  # still reproducible


def test_reinitialize_is_reproducible_and_keeps_the_callers_stream():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    torch.manual_seed(1)
    expected_next = torch.rand(2)
    torch.manual_seed(1)
    reinitialize(net, seed=7)
    weights = [p.clone() for p in net.parameters()]
    assert torch.equal(torch.rand(2), expected_next)
    reinitialize(net, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))


def test_the_decorator_restores_state_even_when_the_call_fails():
    @keeps_global_rng
    def fails():
        torch.manual_seed(0)
        raise ValueError("boom")

    torch.manual_seed(5)
    state = torch.get_rng_state()
    try:
        fails()
    except ValueError:
        pass
    assert torch.equal(torch.get_rng_state(), state)
