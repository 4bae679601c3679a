import json

import pytest
import torch

from evalkit.errors import ConfigMismatchError, WeightsNotFoundError
from evalkit.priors.dummy import DummyPrior, DummyPriorConfig
from evalkit.serialization import load_state_dict


def test_save_load_roundtrip(tmp_path):
    prior = DummyPrior(DummyPriorConfig(embedding_dim=8, num_buckets=16, seed=3))
    prior.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "DummyPrior" and config["embedding_dim"] == 8
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = DummyPrior.from_pretrained(tmp_path)
    for key, value in prior.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key])


def test_missing_folder_names_path(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "nowhere")):
        DummyPrior.from_pretrained(tmp_path / "nowhere")


def test_mismatched_config_lists_keys(tmp_path):
    DummyPrior(DummyPriorConfig(embedding_dim=8, num_buckets=16)).save_pretrained(tmp_path)
    with pytest.raises(ConfigMismatchError, match=r"wrong shape: proj\.bias"):
        DummyPrior.from_pretrained(tmp_path, embedding_dim=12)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigMismatchError, match="num_layers"):
        DummyPrior.from_pretrained(tmp_path)


def test_pickle_refused_unless_opted_in(tmp_path):
    prior = DummyPrior(DummyPriorConfig(embedding_dim=8, num_buckets=16))
    torch.save(prior.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsNotFoundError, match="allow_pickle"):
        load_state_dict(tmp_path)
    state = load_state_dict(tmp_path, allow_pickle=True)
    assert torch.equal(state["proj.weight"], prior.state_dict()["proj.weight"])
