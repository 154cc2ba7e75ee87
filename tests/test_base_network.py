import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from metacompress.errors import DataError
from metacompress.inr.base_network import BaseNetwork, build_model, load_base, save_base

CONFIG = {"in_dim": 2, "width": 8, "depth": 3, "out_dim": 3, "latent_dim": 4, "w0": 30.0, "modality": "image",
          "patch": [32, 32]}


def make_base(seed=0):
    torch.manual_seed(seed)
    return BaseNetwork(build_model(CONFIG), dict(CONFIG))


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
    changed = BaseNetwork(base.model, dict(CONFIG, w0=31.0))
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
