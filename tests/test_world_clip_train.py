import json

import pytest
import torch

from evalkit.embedded.clip import WorldCLIP
from evalkit.errors import WeightsNotFoundError
from evalkit.train.world_clip import CLIPTrainConfig, caption_targets, combo_index, ship_clip, train_clip


def test_quick_training_resume_and_ship(tmp_path):
    config = CLIPTrainConfig.quick()
    final = train_clip(tmp_path / "run", config, progress=False)
    rows = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, config.steps + 1))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert "eval/mean/seen/image_binding" in rows[-1]
    record = json.loads((final / "training_record.json").read_text())
    assert record["wall_time_s"] > 0 and record["num_parameters"] > 0

    # stop half-way, resume: the same weights as the uninterrupted run
    with pytest.raises(FileExistsError):
        train_clip(tmp_path / "run", config, progress=False)
    train_clip(tmp_path / "half", config, progress=False, stop_at=4)
    resumed = train_clip(tmp_path / "half", config, resume=True, progress=False)
    a, b = WorldCLIP.from_pretrained(final), WorldCLIP.from_pretrained(resumed)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value)

    shipped = ship_clip(tmp_path / "run", tmp_path / "shipped")
    loaded = WorldCLIP.from_pretrained(shipped)
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_image(images), a.encode_image(images), atol=2e-2, rtol=2e-2)


def test_caption_targets_mark_stated_combinations():
    index = combo_index()
    targets = caption_targets(["a red striped circle and a blue square"], index)
    stated = {k for k, v in index.items() if targets[0, v] == 1}
    assert stated == {("red", "circle"), ("striped", "circle"), ("blue", "square")}


def test_missing_clip_weights_name_the_path(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="train-world clip"):
        WorldCLIP.from_pretrained(tmp_path / "none")
