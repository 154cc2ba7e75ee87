import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metacompress.codecs.entropy import SymbolModel, decode_symbols, encode_symbols
from metacompress.errors import FormatError, UserError

FAST = settings(max_examples=50, deadline=None)


def gaussian_symbols(rng: np.random.Generator, n: int, levels: int = 32, std: float = 3.0) -> np.ndarray:
    """Discretized Gaussian over ``levels`` values: the shape of quantized modulations."""
    return np.clip(np.round(rng.normal(levels / 2, std, n)), 0, levels - 1).astype(np.int64)


@st.composite
def model_and_symbols(draw):
    """A model from one sample and symbols from another, skewed or uniform, often hitting count-1 values."""
    bits = draw(st.integers(1, 8))
    levels = 2 ** bits
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    skew = draw(st.sampled_from(["uniform", "gaussian", "one-hot"]))
    n_train = draw(st.integers(0, 300))
    if skew == "uniform":
        train = rng.integers(0, levels, n_train)
    elif skew == "gaussian":
        train = gaussian_symbols(rng, n_train, levels, std=max(levels / 16, 0.3))
    else:
        train = np.full(n_train, draw(st.integers(0, levels - 1)))
    model = SymbolModel.from_symbols(train, bits)
    n = draw(st.integers(0, 2000))
    source = draw(st.sampled_from(["model", "uniform", "unseen"]))
    if source == "model":
        symbols = rng.choice(levels, size=n, p=model.probabilities)
    elif source == "uniform":
        symbols = rng.integers(0, levels, n)
    else:
        unseen = np.flatnonzero(np.asarray(model.counts) == 1)
        symbols = rng.choice(unseen if unseen.size else np.arange(levels), size=n)
    return model, symbols.astype(np.int64)


@FAST
@given(model_and_symbols())
def test_round_trip_is_exact(case):
    model, symbols = case
    data = encode_symbols(symbols, model)
    decoded = decode_symbols(data, len(symbols), model)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, symbols)


@FAST
@given(model_and_symbols())
def test_stream_is_within_two_bytes_of_the_ideal_length(case):
    model, symbols = case
    overhead = len(encode_symbols(symbols, model)) * 8 - model.cross_entropy_bits(symbols)
    assert overhead <= 16 + 0.001 * len(symbols)


@pytest.mark.parametrize("symbols", [[], [0], [3], [0, 0, 0, 0], [1] * 50])
def test_edge_lengths_round_trip(symbols):
    model = SymbolModel.from_symbols(np.zeros(1000, dtype=np.int64), 2)
    symbols = np.array(symbols, dtype=np.int64)
    data = encode_symbols(symbols, model)
    if len(symbols) == 0:
        assert data == b""
    np.testing.assert_array_equal(decode_symbols(data, len(symbols), model), symbols)


def test_extremely_skewed_model_still_codes_its_rarest_symbol():
    model = SymbolModel((10 ** 12, 1))
    for symbols in (np.ones(40, dtype=np.int64), np.zeros(10_000, dtype=np.int64), np.array([0, 1, 0, 1])):
        data = encode_symbols(symbols, model)
        np.testing.assert_array_equal(decode_symbols(data, len(symbols), model), symbols)


def test_skewed_source_codes_near_its_cross_entropy():
    rng = np.random.default_rng(0)
    model = SymbolModel.from_symbols(gaussian_symbols(rng, 20_000), 5)
    symbols = gaussian_symbols(rng, 20_000)
    ideal = model.cross_entropy_bits(symbols)
    actual = len(encode_symbols(symbols, model)) * 8
    assert abs(actual - ideal) <= 0.01 * ideal + 64
    assert actual < 0.9 * 5 * len(symbols)


def test_add_one_smoothing_keeps_unseen_values_codable():
    model = SymbolModel.from_symbols(np.array([1, 2, 3, 3, 2, 1, 3]), 2)
    assert model.counts == (1, 3, 3, 4)
    symbols = np.array([0, 3, 0, 0], dtype=np.int64)
    np.testing.assert_array_equal(decode_symbols(encode_symbols(symbols, model), 4, model), symbols)


def test_probabilities_and_cross_entropy():
    model = SymbolModel((1, 1, 2, 4))
    assert model.bits == 2 and model.levels == 4
    assert model.probabilities.dtype == np.float64
    np.testing.assert_allclose(model.probabilities, [0.125, 0.125, 0.25, 0.5])
    assert model.cross_entropy_bits(np.array([0, 3, 3])) == pytest.approx(5.0)
    assert model.cross_entropy_bits(np.array([], dtype=np.int64)) == 0.0


def test_from_symbols_rejects_bad_input():
    with pytest.raises(UserError):
        SymbolModel.from_symbols(np.array([0, 4]), 2)
    with pytest.raises(UserError):
        SymbolModel.from_symbols(np.array([-1]), 2)
    with pytest.raises(UserError):
        SymbolModel.from_symbols(np.array([0.5]), 2)
    for bits in (0, 17):
        with pytest.raises(UserError):
            SymbolModel.from_symbols(np.array([0]), bits)
    with pytest.raises(UserError):
        encode_symbols(np.array([4]), SymbolModel((1, 1, 1, 1)))


def test_json_round_trip_gives_identical_streams():
    rng = np.random.default_rng(3)
    model = SymbolModel.from_symbols(gaussian_symbols(rng, 500, 256, 20.0), 8)
    restored = SymbolModel.from_json(model.to_json())
    assert restored == model and isinstance(model.to_json(), list)
    symbols = gaussian_symbols(rng, 300, 256, 20.0)
    assert encode_symbols(symbols, restored) == encode_symbols(symbols, model)
    np.testing.assert_array_equal(restored.probabilities, model.probabilities)


@pytest.mark.parametrize("bad", [None, {}, "1,2", [], [1], [1, 2, 3], [1, 0], [1, -2], [1, 2.0], [1, True],
                                 [1, "2"], [1] * 2 ** 17])
def test_from_json_rejects_malformed_counts(bad):
    with pytest.raises(FormatError) as info:
        SymbolModel.from_json(bad, source="cfg.json")
    assert str(info.value).startswith("cfg.json: ") and "\n" not in str(info.value)


def test_decode_rejects_payloads_that_cannot_fit_the_count():
    model = SymbolModel((1, 1, 1, 1))
    with pytest.raises(FormatError, match="x.bin: corrupt entropy-coded payload"):
        decode_symbols(b"\x01", 0, model, source="x.bin")
    with pytest.raises(FormatError):
        decode_symbols(b"\xff" * 100, 3, model)
    with pytest.raises(ValueError):
        decode_symbols(b"", -1, model)


@FAST
@given(st.binary(max_size=64), st.integers(0, 300), st.integers(1, 8), st.integers(0, 2 ** 32 - 1))
def test_garbage_gives_format_error_or_in_range_symbols(data, count, bits, seed):
    model = SymbolModel.from_symbols(gaussian_symbols(np.random.default_rng(seed), 200, 2 ** bits), bits)
    try:
        symbols = decode_symbols(data, count, model)
    except FormatError:
        return
    assert symbols.shape == (count,) and symbols.dtype == np.int64
    assert symbols.size == 0 or (symbols.min() >= 0 and symbols.max() < 2 ** bits)


@FAST
@given(model_and_symbols(), st.data())
def test_damaged_streams_give_format_error_or_in_range_symbols(case, data):
    model, symbols = case
    payload = bytearray(encode_symbols(symbols, model))
    if payload and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(payload) - 1))
        payload[index] ^= data.draw(st.integers(1, 255))
    else:
        del payload[data.draw(st.integers(0, len(payload))):]
    try:
        decoded = decode_symbols(bytes(payload), len(symbols), model)
    except FormatError:
        return
    assert decoded.shape == symbols.shape
    assert decoded.size == 0 or (decoded.min() >= 0 and decoded.max() < model.levels)
