"""Entropy coding of quantized COIN++ modulations (thesis §5.2.3).

The thesis counts how often each quantized modulation value occurs over the training
modulations and arithmetic-codes new modulations with that distribution.  ``SymbolModel``
holds those counts (add-one smoothed, so a value never seen in training stays codable) and
``encode_symbols``/``decode_symbols`` range-code symbol arrays with it through
``constriction``.

Range coding rather than ANS: ``constriction``'s ANS coder starts from an empty state, so the
first symbol it pushes costs up to the model's 24-bit precision whatever its probability, about
22 bits over the ideal length on every payload.  The range coder's only waste is its sealing
word, and since the decoder treats missing words as zeros that word can be cut back byte by
byte; what remains is within about one byte of the ideal length (see ``_shortest_decodable``).
On a 32×32 image each byte is 0.008 bpp, so this is worth the few extra trial decodes.

Wire format: the coder's 32-bit words, big-endian, with trailing zero bytes dropped.  Big-endian
because a range code is a binary fraction read most significant word first: cutting bytes off
the end of a big-endian stream rounds that fraction, which is what lets the seal shrink.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import constriction
import numpy as np

from metacompress.errors import FormatError, UserError

MAX_BITS = 16

# Cost ceiling used to reject payloads too long for their symbol count.  constriction gives
# every symbol at least probability 2^-24, and range coding wastes < 0.01 bit a symbol, so a
# valid stream needs < 3.01 bytes a symbol plus < 12 bytes of seal; the margins are generous.
_MAX_BYTES_PER_SYMBOL = 5
_MAX_SEAL_BYTES = 16

_WIRE_WORD = np.dtype(">u4")

# A range decoder turns any byte string, even an empty or truncated one, into *some* symbols, so
# a payload must also be long enough for what it decodes to: its bits may fall short of the
# symbols' information content −Σ log2 p(s) by at most SLACK_BITS.  Before decoding, that gives a
# bound from the symbol count alone (each symbol carries at least −log2 of the largest
# probability): a few bytes cannot demand millions of symbols.  The shortest decodable stream
# can undercut the information content (when the final interval happens to hold an unusually
# short binary fraction, a chance of about 2^-SLACK_BITS); the encoder then appends zero bytes,
# which decode identically.  A payload cut short by two or more bytes decodes to symbols it is
# too short for, and is refused (a one-byte cut is left to the container's CRC).
SLACK_BITS = 8


@dataclass(frozen=True)
class SymbolModel:
    """Add-one-smoothed symbol counts over the alphabet [0, 2^bits).

    Kept as integers, not probabilities, so that encoder and decoder derive bit-identical
    float64 probabilities from the same JSON and the stream decodes exactly.
    """

    counts: tuple[int, ...]

    def __post_init__(self):
        problem = _counts_problem(self.counts)
        if problem:
            raise UserError(f"bad symbol counts: {problem}")
        object.__setattr__(self, "counts", tuple(self.counts))

    @classmethod
    def from_symbols(cls, symbols: np.ndarray, bits: int) -> SymbolModel:
        """Count each value of ``symbols`` (any shape) and add one to every count."""
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
            raise UserError(f"symbols have 1–{MAX_BITS} bits, got {bits!r}")
        flat = _checked_symbols(symbols, 2 ** int(bits))
        counts = np.bincount(flat, minlength=2 ** int(bits)) + 1
        return cls(tuple(int(c) for c in counts))

    @property
    def levels(self) -> int:
        return len(self.counts)

    @property
    def bits(self) -> int:
        return self.levels.bit_length() - 1

    @property
    def probabilities(self) -> np.ndarray:
        """float64 probabilities, computed the one way both coder ends use."""
        counts = np.asarray(self.counts, dtype=np.float64)
        return counts / counts.sum()

    def cross_entropy_bits(self, symbols: np.ndarray) -> float:
        """Ideal code length of ``symbols`` under this model, −Σ log2 p(s), in bits.

        The yardstick for the coder: real streams come within about a byte of it.
        """
        flat = _checked_symbols(symbols, self.levels)
        return float(-np.log2(self.probabilities[flat]).sum())

    def to_json(self) -> list[int]:
        return list(self.counts)

    @classmethod
    def from_json(cls, data: object, source: str = "entropy model") -> SymbolModel:
        """Rebuild a model from ``to_json`` output, as a FormatError if it is malformed."""
        if not isinstance(data, (list, tuple)):
            raise FormatError(f"{source}: symbol counts must be a list of integers, got {type(data).__name__}")
        problem = _counts_problem(data)
        if problem:
            raise FormatError(f"{source}: {problem}")
        return cls(tuple(data))


def _counts_problem(counts: object) -> str | None:
    """Why ``counts`` cannot be a model's counts, or None if they can."""
    try:
        n = len(counts)
    except TypeError:
        return f"symbol counts must be a list of integers, got {type(counts).__name__}"
    if not 2 <= n <= 2 ** MAX_BITS or n & (n - 1):
        return f"need 2^b symbol counts with 1 ≤ b ≤ {MAX_BITS}, got {n}"
    for count in counts:
        if isinstance(count, bool) or not isinstance(count, int):
            return f"symbol counts must be integers, got {count!r}"
        if count < 1:
            return f"symbol counts must be ≥ 1 (add-one smoothing), got {count}"
    return None


def _checked_symbols(symbols: np.ndarray, levels: int) -> np.ndarray:
    """``symbols`` flattened to int32, after checking they are integers in [0, levels)."""
    array = np.asarray(symbols)
    if array.size == 0:
        return np.zeros(0, dtype=np.int32)
    if not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"symbols must be integers, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= levels:
        raise UserError(f"symbols must lie in [0, {levels - 1}], got values in [{low}, {high}]")
    return array.reshape(-1).astype(np.int32)


@lru_cache(maxsize=16)
def _categorical(counts: tuple[int, ...]):
    """constriction's model for ``counts``; cached because encoding decodes several times.

    ``perfect=False`` is spelled out because constriction's default has changed between
    versions, and encoder and decoder must quantize the probabilities identically.
    """
    counts_array = np.asarray(counts, dtype=np.float64)
    return constriction.stream.model.Categorical(counts_array / counts_array.sum(), perfect=False)


def encode_symbols(symbols: np.ndarray, model: SymbolModel) -> bytes:
    """Range-code ``symbols`` (any shape, read flattened) with ``model``.

    The symbol count is not stored: the container already knows it from the latent shape.
    """
    flat = _checked_symbols(symbols, model.levels)
    if flat.size == 0:
        return b""
    return _padded(_shortest_encoding(flat, model), flat, model)


def _shortest_encoding(flat: np.ndarray, model: SymbolModel) -> bytes:
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(flat, _categorical(model.counts))
    data = encoder.get_compressed().astype(_WIRE_WORD).tobytes().rstrip(b"\0")
    return _shortest_decodable(data, flat, model)


def _padded(data: bytes, symbols: np.ndarray, model: SymbolModel) -> bytes:
    return data + b"\0" * max(0, min_bytes_for(model.cross_entropy_bits(symbols)) - len(data))


def min_bytes_for(information_bits: float) -> int:
    """The fewest payload bytes that may carry symbols of this information content."""
    return max(0, math.ceil((information_bits - SLACK_BITS) / 8))


def min_payload_bytes(count: int, model: SymbolModel) -> int:
    """The fewest bytes any payload of ``count`` symbols has: each carries at least −log2 max p."""
    return min_bytes_for(count * -math.log2(float(model.probabilities.max())))


def _shortest_decodable(data: bytes, symbols: np.ndarray, model: SymbolModel) -> bytes:
    """Cut bytes off ``data`` for as long as it still decodes to ``symbols``.

    The sealed stream is a point x inside the final coding interval [lower, upper), placed
    within one 32-bit word above ``lower`` so the stream would survive concatenation.  Ours
    is never concatenated (the decoder pads with zeros), so any shorter fraction inside the
    interval will do.  The shortest is ``lower`` rounded up to whole bytes, which is x's prefix
    either as is or plus one in its last byte; shorter prefixes only round further up, so the
    first length where neither candidate decodes ends the search.  Trial decodes make this
    exact without reaching into constriction's state.
    """
    while data:
        shorter = next(
            (c for c in _rounded_prefixes(data[:-1]) if _decodes_to(c, symbols, model)), None
        )
        if shorter is None:
            return data
        data = shorter
    return data


def _rounded_prefixes(prefix: bytes) -> list[bytes]:
    """``prefix`` rounded down and up in its last byte, trailing zeros dropped."""
    candidates = [prefix.rstrip(b"\0")]
    bumped = int.from_bytes(prefix, "big") + 1
    if prefix and bumped < 256 ** len(prefix):
        candidates.append(bumped.to_bytes(len(prefix), "big").rstrip(b"\0"))
    return candidates


def _decodes_to(data: bytes, symbols: np.ndarray, model: SymbolModel) -> bool:
    try:
        decoded = _range_decode(data, len(symbols), model)
    except BaseException as exc:
        if not _is_coder_failure(exc):
            raise
        return False
    return np.array_equal(decoded, symbols)


def _range_decode(data: bytes, count: int, model: SymbolModel) -> np.ndarray:
    padded = data + b"\0" * (-len(data) % 4)
    words = np.frombuffer(padded, dtype=_WIRE_WORD).astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    return np.asarray(decoder.decode(_categorical(model.counts), count))


def _is_coder_failure(exc: BaseException) -> bool:
    """Whether ``exc`` came from constriction rejecting data, not from the user or the runtime.

    A Rust panic surfaces as pyo3's PanicException, which derives from BaseException, so a
    plain ``except Exception`` would let corrupt data escape as an unexplained crash.
    """
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def decode_symbols(data: bytes, count: int, model: SymbolModel, source: str = "input") -> np.ndarray:
    """Decode ``count`` symbols (int64, flat) from ``encode_symbols`` output.

    A range decoder maps almost any byte string to some symbols, so corruption is mostly caught
    by the container's CRC; here it is caught where constriction rejects the data, where the
    length cannot fit ``count`` symbols (checked before decoding, so a few bytes cannot demand
    millions of symbols), or where the payload is shorter than the information content of what
    it decodes to (see SLACK_BITS).  Either way the result is a FormatError or exactly ``count``
    in-range symbols, never a crash.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"symbol count must be a non-negative integer, got {count!r}")
    data = bytes(data)
    corrupt = FormatError(f"{source}: corrupt entropy-coded payload")
    if count == 0:
        if data:
            raise corrupt
        return np.zeros(0, dtype=np.int64)
    if len(data) > _MAX_BYTES_PER_SYMBOL * count + _MAX_SEAL_BYTES:
        raise corrupt
    if len(data) < min_payload_bytes(count, model):  # before decoding: a few bytes cannot claim a huge count
        raise FormatError(f"{source}: entropy-coded payload is {len(data)} bytes, too short for {count} symbols "
                          f"(at least {min_payload_bytes(count, model)}): truncated or corrupt")
    try:
        symbols = _range_decode(data, int(count), model)
    except BaseException as exc:
        if not _is_coder_failure(exc):
            raise
        raise corrupt from exc
    if symbols.shape != (count,) or (symbols.size and (symbols.min() < 0 or symbols.max() >= model.levels)):
        raise corrupt
    if len(data) < min_bytes_for(model.cross_entropy_bits(symbols)):
        raise FormatError(f"{source}: entropy-coded payload is {len(data)} bytes, too short for the symbols it "
                          "decodes to: truncated or corrupt")
    return symbols.astype(np.int64)
