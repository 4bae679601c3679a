import json

import pytest
import torch

from evalkit.world.models.clip import WorldCLIP
from evalkit.errors import RunExistsError, WeightsNotFoundError
from evalkit.train.world_clip import CLIPTrainConfig, caption_targets, combo_index, ship_clip, train_clip


def test_quick_training_resume_and_ship(tmp_path):
    config = CLIPTrainConfig.quick()
    final = train_clip(tmp_path / "run", config, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, config.steps + 1))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert "eval/mean/seen/image_binding" in rows[-1]
    record = json.loads((final / "training_record.json").read_text())
    assert record["wall_time_s"] > 0 and record["num_parameters"] > 0

    # stop half-way, resume: the same weights as the uninterrupted run
    with pytest.raises(RunExistsError, match="--resume"):
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


def test_vectorised_satisfaction_matches_the_scene_objects():
    from evalkit.train.world_clip import caption_codes, satisfies, scene_codes
    from evalkit.world import parse_caption, sample_pairs

    captions, scenes = sample_pairs("all", 120, seed=3, split="train")
    vocab: dict = {}
    codes, valid = caption_codes(captions, vocab)
    got = satisfies(scene_codes(scenes, vocab), codes, valid)
    specs = [parse_caption(c) for c in captions]
    expected = torch.tensor(
        [[all(any(o.satisfies(p) for o in scene.objects) for p in spec.objects) for spec in specs] for scene in scenes]
    )
    assert torch.equal(got, expected)
    assert got.diagonal().all() and 0 < got.float().mean() < 0.5  # each render fits its caption, and some others


def test_multi_positive_loss_ignores_true_captions_only():
    from evalkit.train.world_clip import contrastive_loss

    model = WorldCLIP.tiny()
    torch.manual_seed(0)
    image, text = (
        torch.nn.functional.normalize(torch.randn(4, 16), dim=-1),
        torch.nn.functional.normalize(torch.randn(4, 16), dim=-1),
    )
    ids = torch.arange(4).unsqueeze(1)  # four different captions
    none = torch.zeros(4, 4, dtype=torch.bool)
    assert contrastive_loss(model, image, text, ids, none) == contrastive_loss(model, image, text, ids)
    positives = none.clone()
    positives[0, 1] = True  # caption 1 is true of image 0
    with_pos = contrastive_loss(model, image, text, ids, positives)
    # by hand: row 0 of image→text and column 0 of text→image lose that entry
    scale = model.logit_scale.exp()
    logits = scale * image @ text.T
    i2t = logits.masked_fill(positives, float("-inf"))
    t2i = logits.T.masked_fill(positives.T, float("-inf"))
    target = torch.arange(4)
    expected = 0.5 * (torch.nn.functional.cross_entropy(i2t, target) + torch.nn.functional.cross_entropy(t2i, target))
    torch.testing.assert_close(with_pos, expected)
    assert with_pos < contrastive_loss(model, image, text, ids)  # a negative left the softmax denominators


def test_text_tower_only_training_keeps_the_image_tower(tmp_path):
    from click.testing import CliRunner

    from evalkit.cli import cli

    base = train_clip(tmp_path / "base", CLIPTrainConfig.quick(), progress=False)
    result = CliRunner().invoke(
        cli,
        [
            "train-world",
            "clip",
            "--quick",
            "--out",
            str(tmp_path / "text"),
            "--init-from",
            str(base),
            "--freeze-image-tower",
            "--multi-positive",
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "text" / "train_config.json").read_text())
    assert config["freeze_image_tower"] and config["multi_positive"] and config["init_from"] == str(base)
    before, after = (
        WorldCLIP.from_pretrained(base).state_dict(),
        WorldCLIP.from_pretrained(tmp_path / "text" / "final").state_dict(),
    )
    visual = [k for k in before if k.startswith("model.visual.")]
    assert visual and all(torch.equal(before[k], after[k]) for k in visual)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in visual)


def test_order_blind_positives_spare_the_swapped_twin():
    from evalkit.train.world_clip import batch_positives, training_pool

    pool = training_pool(16, seed=5)  # 16 captions, then their 16 swapped twins
    rows = torch.arange(32)
    blind = batch_positives(pool, rows, CLIPTrainConfig(order_blind=True))
    # each attribute pair's twin has the same words; a spatial twin names the opposite relation ("left" / "right")
    attribute = [i for i in range(16) if not pool["spatial"][i]]
    assert attribute and all(blind[i, i + 16] and blind[i + 16, i] for i in attribute)
    assert not any(blind[i, i + 16] for i in range(16) if pool["spatial"][i])
    assert batch_positives(pool, rows, CLIPTrainConfig()) is None
    true = batch_positives(pool, rows, CLIPTrainConfig(multi_positive=True))
    both = batch_positives(pool, rows, CLIPTrainConfig(multi_positive=True, order_blind=True))
    assert torch.equal(both, true | blind) and not torch.equal(true, both)


def _clip(tower: str, words=None):
    from evalkit.world.models.clip import base_model_config, world_words
    from evalkit.world.models.tokenizer import CompactTokenizer

    cfg = base_model_config()
    cfg["vision_cfg"] = {**cfg["vision_cfg"], "timm_model_name": tower}
    cfg["text_cfg"].update(width=32, layers=1, heads=2)
    words = words or world_words()
    return WorldCLIP(cfg, CompactTokenizer.from_words(words, cfg["text_cfg"]["context_length"]).bpe_ids)


def test_grow_clip_starts_the_coordinate_tower_and_new_words_from_the_old_function():
    from evalkit.train.world_clip import grow_clip
    from evalkit.world.models.clip import world_words

    torch.manual_seed(0)
    relation_words = {"on", "the", "left", "right", "top", "bottom", "of"}
    old = _clip("evalkit_world_cnn", [w for w in world_words() if w not in relation_words]).eval()
    new = grow_clip(old, _clip("evalkit_world_cnn_xy")).eval()
    assert new.tokenizer.vocab_size > old.tokenizer.vocab_size
    images = torch.rand(3, 3, 32, 32)
    prompts = ["a red circle and a blue square", "a big striped star and a small cross"]
    with torch.no_grad():
        assert torch.allclose(old.encode_image(images), new.encode_image(images), atol=1e-6)
        assert torch.allclose(old.encode_text(prompts).text_embeds, new.encode_text(prompts).text_embeds, atol=1e-6)
        # the coordinate channels start at zero weight, and the grown model still reads the new words
        first = new.model.visual.trunk.features[0].block[0].weight
        assert first.shape[1] == 5 and first[:, 3:].abs().max() == 0
        spatial = new.encode_text(["a circle on the left of a square", "a circle on the right of a square"])
        assert not torch.allclose(spatial.text_embeds[0], spatial.text_embeds[1])
    with pytest.raises(ValueError, match="give one"):
        from evalkit.train.world_clip import build_model

        build_model(CLIPTrainConfig(init_from="a", grow_from="b"))


def test_text_lr_scale_slows_the_text_transformer_only():
    from evalkit.train.world_clip import AuxHeads, build_model, combo_index, parameter_groups

    config = CLIPTrainConfig(tiny=True, text_lr_scale=0.1)
    model = build_model(config)
    groups = parameter_groups(model, AuxHeads(model.embedding_dim, len(combo_index())), config)
    slow = {id(p) for g in groups if g.get("lr") == pytest.approx(config.lr * 0.1) for p in g["params"]}
    names = {n.removeprefix("model."): id(p) for n, p in model.named_parameters()}
    assert names["transformer.resblocks.0.attn.in_proj_weight"] in slow and names["text_projection"] in slow
    assert names["token_embedding.weight"] not in slow and names["logit_scale"] not in slow
    assert not any(names[n] in slow for n in names if n.startswith("visual."))
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(model.parameters())) + 4  # + the two auxiliary heads' weight and bias
