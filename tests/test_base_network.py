import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from metacompress.errors import DataError, FormatError
from metacompress.inr.base_config import BaseConfig
from metacompress.inr.base_network import (BUNDLED_BASES, DEFAULT_BASE, BaseNetwork, build_model, bundled_bases,
                                           load_base, save_base)
from metacompress.modalities.spec import DataSpec

CONFIG = BaseConfig(DataSpec("image", 3, (32, 32), value_range=((0.0, 255.0),) * 3), in_dim=2, width=8, depth=3,
                    latent_dim=4, w0=30.0)


def make_base(seed=0):
    torch.manual_seed(seed)
    return BaseNetwork(build_model(CONFIG), CONFIG)


def test_round_trip_keeps_weights_config_and_hash(tmp_path):
    base = make_base()
    digest = save_base(tmp_path / "base", base)
    loaded = load_base(tmp_path / "base")
    assert loaded.hash == digest == base.hash and loaded.config == CONFIG
    coords, latents = torch.rand(7, 2), torch.randn(2, 4)
    assert torch.equal(loaded.model(coords, latents), base.model(coords, latents))


def test_hash_changes_with_any_weight_or_setting():
    base = make_base()
    other = make_base(seed=1)
    assert base.hash != other.hash
    changed = BaseNetwork(base.model, CONFIG.replace(w0=31.0))
    assert changed.hash != base.hash


def test_modified_weights_or_description_are_refused(tmp_path):
    save_base(tmp_path / "base", make_base())
    weights = load_file(tmp_path / "base.safetensors")
    info = json.loads((tmp_path / "base.json").read_text())
    weights["base.last.bias"] += 1e-3
    save_file(weights, tmp_path / "base.safetensors", metadata={"write_id": info["write_id"]})
    with pytest.raises(DataError, match="content hash mismatch"):
        load_base(tmp_path / "base")
    save_base(tmp_path / "b2", make_base())
    info = json.loads((tmp_path / "b2.json").read_text())
    info["version"] = 9
    (tmp_path / "b2.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="version 9"):
        load_base(tmp_path / "b2")


SHIPPED = [*sorted(BUNDLED_BASES.glob("*.json")), *sorted(Path(__file__).resolve().parents[1].glob(
    "benchmarks/results/coinpp-rd-*/bases/*.json"))]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_description_parses_and_serializes_back_exactly(path):
    stored = json.loads(path.read_text())["config"]
    config = BaseConfig.from_dict(stored)
    assert config.to_dict() == stored
    assert json.dumps(config.to_dict(), sort_keys=True) == json.dumps(stored, sort_keys=True)  # same hash


def test_loading_a_shipped_base_reproduces_its_stored_hash():
    bundled = bundled_bases()
    assert bundled[0][0] == DEFAULT_BASE and len(bundled) == len(list(BUNDLED_BASES.glob("*.json"))) >= 2
    for stem, digest in bundled:
        assert load_base(stem).hash == digest


@pytest.mark.parametrize("field, value, message", [
    ("width", 0, "'width' must be a positive integer"),
    ("width", "8", "'width' must be int"),
    ("depth", True, "'depth' must be int"),
    ("w0", -1.0, "'w0' must be positive"),
    ("modality", "video", "unknown modality 'video'"),
    ("patch", [32, -1], "patch must be positive"),
    ("patch", "32", "'patch' must be a list of integers"),
    ("value_range", [[0.0, 255.0]], "value_range must be 3 finite"),
    ("value_range", [[1.0, 0.0]] * 3, "value_range must be 3 finite"),
    ("coordinates", "polar", "coordinates must be one of"),
    ("in_dim", 3, "in_dim 3 does not fit"),
    ("codes", {"mean": 0.0, "std": 0.0, "steps": 1, "patches": 1, "symbol_counts": {}}, "positive std"),
    ("codes", {"mean": 0.0, "std": 1.0, "steps": 1, "patches": 1, "symbol_counts": {"2": [1, 1]}}, "must be 4 counts"),
    ("surprise", 1, "unknown field(s) 'surprise'"),
])
def test_a_bad_field_is_a_format_error_naming_it(field, value, message):
    stored = CONFIG.to_dict() | {field: value}
    with pytest.raises(FormatError, match=re.escape(message)):
        BaseConfig.from_dict(stored)


def test_a_description_with_a_bad_field_is_refused_on_load(tmp_path):
    save_base(tmp_path / "base", make_base())
    info = json.loads((tmp_path / "base.json").read_text())
    info["config"]["latent_dim"] = -4
    (tmp_path / "base.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="'latent_dim' must be a positive integer"):
        load_base(tmp_path / "base")


def test_the_config_is_immutable_and_the_hash_is_computed_once(monkeypatch):
    import dataclasses

    from metacompress.inr import base_network

    base = make_base()
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.config.width = 9
    calls = []
    real = base_network.content_hash
    monkeypatch.setattr(base_network, "content_hash", lambda *a: calls.append(1) or real(*a))
    assert base.hash == base.hash == base.hash and len(calls) == 1


def test_per_dimension_codes_round_trip_and_must_match_the_latent_size():
    codes = {"mean": 0.0, "std": 1.0, "steps": 3, "patches": 8, "symbol_counts": {"2": [1, 2, 3, 4]},
             "dim_mean": [0.0, 0.1, 0.2, 0.3], "dim_std": [1.0, 2.0, 3.0, 4.0]}
    config = BaseConfig.from_dict(CONFIG.to_dict() | {"codes": codes})
    assert config.codes.per_dimension and config.to_dict()["codes"] == codes
    assert "dim_std" not in BaseConfig.from_dict(CONFIG.to_dict() | {"codes": codes | {
        "dim_mean": None, "dim_std": None}}).to_dict()["codes"]
    for bad, message in (({"dim_std": [1.0, 2.0, 3.0]}, "equal length"), ({"dim_std": [1.0, 2.0, 0.0, 1.0]}, "positive"),
                         ({"dim_mean": None}, "equal length"), ({"dim_std": "1,2"}, "list of numbers"),
                         ({"dim_mean": [0.0] * 5, "dim_std": [1.0] * 5}, "for 5 latent dimensions, not 4")):
        with pytest.raises(FormatError, match=message):
            BaseConfig.from_dict(CONFIG.to_dict() | {"codes": codes | bad})
