"""One Codec interface for every codec, found by name or by a .mcz file's header (issue 16)."""

import numpy as np
import pytest

from metacompress.codecs.codec import CODEC_NAMES, Codec, Encoded, codec_class, codecs_for, decode_mcz
from metacompress.codecs.coin import Coin, CoinConfig
from metacompress.codecs.coinpp import CoinPP
from metacompress.errors import FormatError, UserError

IMAGE = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
SIGNAL = (0.3 * np.sin(np.arange(16_000) / 7.0)).astype(np.float32)


def test_every_registered_codec_implements_the_interface():
    for name in CODEC_NAMES:
        cls = codec_class(name)
        assert issubclass(cls, Codec) and cls.name == name
        assert cls.suffix.startswith(".") and cls.modality in ("image", "audio", "any")
    assert codecs_for("image")[:2] == ["coin", "coinpp"] and "jpeg" in codecs_for("image")
    assert set(codecs_for("audio")) == {"coinpp", "mp3", "opus"}
    with pytest.raises(UserError, match="unknown codec 'bpg'"):
        codec_class("bpg")


@pytest.mark.parametrize("name, x", [("jpeg", IMAGE), ("webp", IMAGE), ("jpeg2000", IMAGE), ("mp3", SIGNAL),
                                     ("opus", SIGNAL)])
def test_compress_gives_the_file_and_exactly_what_decoding_it_gives(name, x):
    codec = codec_class(name)()
    encoded = codec.compress(x)
    assert isinstance(encoded, Encoded)
    if name != "opus":  # an Ogg stream gets a random serial number: the bytes differ run to run
        assert encoded.data == codec.encode(x)
    decoded = codec.decode(encoded.data, len(x)) if codec.modality == "audio" else codec.decompress(encoded.data)
    np.testing.assert_array_equal(decoded, encoded.reconstruction)
    assert encoded.reconstruction.shape[0] == x.shape[0]


def test_mcz_files_dispatch_on_their_header(tiny_image_base):
    coin = Coin(CoinConfig(depth=2, width=8, iterations=5)).compress(IMAGE)
    coinpp = CoinPP(tiny_image_base, bits=5, steps=2).compress(IMAGE)
    loads = []

    def base():
        loads.append(1)
        return tiny_image_base
    name, point = decode_mcz(coin.data, "a.mcz", base=base)
    assert name == "coin" and not loads  # a COIN file never loads a base network
    np.testing.assert_array_equal(point.values, coin.reconstruction)
    name, point = decode_mcz(coinpp.data, "b.mcz", base=base)
    assert name == "coinpp" and loads == [1]
    np.testing.assert_array_equal(point.values, coinpp.reconstruction)
    with pytest.raises(UserError, match="--scale"):
        decode_mcz(coinpp.data, "b.mcz", base=tiny_image_base, scale=2.0)
    with pytest.raises(FormatError):
        decode_mcz(b"\xb2\x05junk", "c.mcz", base=tiny_image_base)
    assert decode_mcz(coin.data, "a.mcz", scale=2.0)[1].values.shape == (48, 40, 3)
