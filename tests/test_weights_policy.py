"""One policy for weights folders (safetensors, or pickle only when allowed) and one weights fingerprint."""

import pytest
import torch

from evalkit.errors import WeightsNotFoundError
from evalkit.serialization import PICKLE_SUFFIXES, files_fingerprint, weights_fingerprint, weights_format


def test_safetensors_are_used_and_a_variant_is_named_only_without_plain_files(tmp_path):
    (tmp_path / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert weights_format(tmp_path, False) == {"use_safetensors": True, "variant": "fp16"}
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    assert weights_format(tmp_path, False) == {"use_safetensors": True}


@pytest.mark.parametrize("suffix", PICKLE_SUFFIXES)
def test_pickle_only_folders_are_refused_in_one_message_unless_allowed(tmp_path, suffix):
    (tmp_path / f"model{suffix}").write_bytes(b"")
    with pytest.raises(WeightsNotFoundError) as info:
        weights_format(tmp_path, False, "thing", hint="Download the safetensors.")
    message = str(info.value)
    for part in (
        "thing: ",
        str(tmp_path),
        f"model{suffix}",
        "arbitrary code",
        "allow_pickle=True",
        "--allow-pickle",
        "Download the safetensors.",
    ):
        assert part in message
    assert weights_format(tmp_path, True) == {"use_safetensors": False}


def test_a_folder_without_weights_names_itself(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no weights") as info:
        weights_format(tmp_path, True, missing="Get them.")
    assert str(tmp_path) in str(info.value) and "Get them." in str(info.value)


def test_weights_fingerprint_is_exact_and_the_same_for_a_module_and_its_state_dict():
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    assert weights_fingerprint(module) == weights_fingerprint(module.state_dict())
    assert weights_fingerprint(module) != weights_fingerprint(module.to(torch.float64))
    changed = {k: v.clone() for k, v in module.state_dict().items()}
    changed["bias"][0] += 1e-6
    assert weights_fingerprint(changed) != weights_fingerprint(module)
    assert weights_fingerprint(module.to(torch.bfloat16))  # any dtype


def test_files_fingerprint_depends_on_names_and_contents_not_the_folder(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.safetensors").write_bytes(b"weights")
    assert files_fingerprint([tmp_path / "a" / "model.safetensors"]) == files_fingerprint(
        [tmp_path / "b" / "model.safetensors"]
    )
    (tmp_path / "b" / "model.safetensors").write_bytes(b"other")
    assert files_fingerprint([tmp_path / "a" / "model.safetensors"]) != files_fingerprint(
        [tmp_path / "b" / "model.safetensors"]
    )


def test_the_public_checkpoint_priors_are_generated_from_the_table():
    import evalkit.priors.real as real

    for entry in real.KNOWN_CHECKPOINTS:
        cls = getattr(real, entry["class_name"])
        assert (cls.__qualname__, cls.__module__, cls.name, cls.checkpoint) == (
            entry["class_name"],
            "evalkit.priors.real",
            entry["name"],
            entry["name"],
        )
        assert cls.default_space == entry["embedding_space"] and cls.env_var == entry["env_var"]
        assert entry["repo_id"] in cls.__doc__
