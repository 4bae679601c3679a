"""t2i-complex: T2I-CompBench's 3-in-1 combination per prompt type, the wrapper over its three parts, and a run
through ``evaluate`` (rows stored in the work cache)."""

from __future__ import annotations

import json

import pytest
import torch

from evalkit.contracts import Batch, PromptItem, Protocol, Scorer, Suite
from evalkit.errors import WeightsNotFoundError
from evalkit.scorers.t2i_complex import T2IComplexScorer, complex_type, three_in_one


def test_three_in_one_per_type():
    assert three_in_one("spatial", bvqa=0.4, spatial=0.8) == pytest.approx((0.8 + 0.4) * 0.5)
    assert three_in_one("action", bvqa=0.4, clip=0.3) == pytest.approx((0.3 + 0.4) * 0.5)
    assert three_in_one("spatial-action", bvqa=0.4, spatial=0.8, clip=0.3) == pytest.approx((0.4 + 0.8 + 0.3) / 3)
    # the order of operations of 3_in_1.py, bit for bit
    assert three_in_one("spatial", 0.1, 0.7) == (0.7 + 0.1) * 0.5
    assert three_in_one("spatial-action", 0.1, 0.7, 0.2) == (0.1 + 0.7 + 0.2) / 3
    with pytest.raises(ValueError, match="unknown complex type"):
        three_in_one("other", 0.1, 0.2, 0.3)
    with pytest.raises(TypeError):  # a part the type needs is missing
        three_in_one("spatial", 0.4)


def test_type_from_the_suite_else_spatial_action():
    assert complex_type(PromptItem("x", "complex", "val", "a", meta={"complex_type": "action"})) == ("action", "suite")
    assert complex_type(PromptItem("x", "complex", "val", "a")) == ("spatial-action", "default")
    with pytest.raises(ValueError, match="unknown complex_type"):
        complex_type(PromptItem("x", "complex", "val", "a", meta={"complex_type": "both"}))


class Fixed(Scorer):
    """A part whose score is looked up by prompt; records what it was asked to score."""

    supported_dtypes = ("float32", "bfloat16")

    def __init__(self, name, values, field="score", structure="complex", reason=None):
        super().__init__()
        self.name, self.values, self.field, self.structure, self.reason = name, values, field, structure, reason
        self.asked = []

    def score(self, images, batch):
        self.asked += batch.prompts
        return [
            {
                "score": min(max(self.values[p], 0.0), 1.0),
                self.field: self.values[p],
                "part": self.name,
                **({"questions": [{"question": "q?", "p": self.values[p]}]} if self.name == "blip-vqa" else {}),
            }
            for p in batch.prompts
        ]

    def not_applicable(self, item):
        return self.reason(item) if self.reason else None


def fixed_parts(reason=None):
    prompts = {"s": (0.4, 0.8, 0.3), "a": (0.6, 0.2, 0.25), "sa": (0.5, 0.9, 0.35), "u": (0.2, 0.6, -0.1)}
    return {
        "blip-vqa": Fixed("blip-vqa", {p: v[0] for p, v in prompts.items()}),
        "t2i-spatial": Fixed("t2i-spatial", {p: v[1] for p, v in prompts.items()}, reason=reason),
        "t2i-clip": Fixed("t2i-clip", {p: v[2] for p, v in prompts.items()}, field="cosine"),
    }


def complex_items():
    return [
        PromptItem("s", "complex", "val", "i0", meta={"complex_type": "spatial"}),
        PromptItem("a", "complex", "val", "i1", meta={"complex_type": "action"}),
        PromptItem("sa", "complex", "val", "i2", meta={"complex_type": "spatial-action"}),
        PromptItem("u", "complex", "val", "i3"),
    ]


def test_wrapper_combines_the_parts_each_type_needs():
    parts = fixed_parts()
    scorer = T2IComplexScorer(parts=parts)
    assert scorer.supported_dtypes == ("float32", "bfloat16")
    rows = scorer.update(torch.rand(4, 3, 8, 8), Batch(complex_items(), [42] * 4))
    assert [r["complex_type"] for r in rows] == ["spatial", "action", "spatial-action", "spatial-action"]
    assert rows[0]["score"] == pytest.approx((0.8 + 0.4) * 0.5) and rows[0]["parts"] == {
        "blip-vqa": 0.4,
        "t2i-spatial": 0.8,
    }
    assert rows[1]["score"] == pytest.approx((0.25 + 0.6) * 0.5) and set(rows[1]["parts"]) == {"blip-vqa", "t2i-clip"}
    assert rows[2]["score"] == pytest.approx((0.5 + 0.9 + 0.35) / 3)
    # the CLIP part is the raw cosine, as 3_in_1.py adds it (here negative)
    assert rows[3]["three_in_one"] == pytest.approx((0.2 + 0.6 - 0.1) / 3) and rows[3]["type_from"] == "default"
    assert rows[0]["questions"] == [{"question": "q?", "p": 0.4}]
    assert rows[0]["part_details"]["t2i-spatial"]["part"] == "t2i-spatial"
    # only the parts a type needs ran
    assert parts["t2i-spatial"].asked == ["s", "sa", "u"] and parts["t2i-clip"].asked == ["a", "sa", "u"]
    assert parts["blip-vqa"].asked == ["s", "a", "sa", "u"]
    json.dumps(rows)  # rows go to samples.jsonl and the work cache


def test_not_applicable_when_a_needed_part_is():
    parts = fixed_parts(reason=lambda item: "no relation" if item.prompt in ("a", "sa") else None)
    scorer = T2IComplexScorer(parts=parts)
    items = complex_items()
    assert scorer.not_applicable(items[0]) is None
    assert scorer.not_applicable(items[1]) is None  # an action prompt needs no spatial part
    assert scorer.not_applicable(items[2]) == "t2i-spatial (needed by a spatial-action prompt): no relation"
    rows = scorer.score(torch.rand(4, 3, 8, 8), Batch(items, [42] * 4))
    assert rows[2]["score"] == 0.0 and "no relation" in rows[2]["not_applicable"]
    assert "sa" not in parts["t2i-spatial"].asked and "sa" not in parts["blip-vqa"].asked


def test_parts_must_use_the_complex_structure():
    parts = fixed_parts()
    parts["t2i-clip"].structure = "simple"
    with pytest.raises(ValueError, match="structure='complex'"):
        T2IComplexScorer(parts=parts)


def test_weights_folder_layout(tmp_path, monkeypatch):
    from evalkit.scorers.blip_vqa import BlipVQAScorer
    from evalkit.scorers.spatial import T2ISpatialScorer
    from evalkit.scorers.t2i_clip import T2IClipScorer

    monkeypatch.setenv("EVALKIT_NOUN_PHRASE_SPLITTER", "auto")  # B-VQA's fingerprint names its splitter
    with pytest.raises(WeightsNotFoundError, match="blip-vqa/, t2i-spatial/ and t2i-clip/"):
        T2IComplexScorer(tmp_path / "nowhere")
    root = tmp_path / "weights"
    T2ISpatialScorer.write_tiny(root / "t2i-spatial")
    T2IClipScorer.write_tiny(root / "t2i-clip")
    monkeypatch.delenv("EVALKIT_BLIP_VQA_DIR", raising=False)
    with pytest.raises(WeightsNotFoundError, match="EVALKIT_BLIP_VQA_DIR"):  # no blip-vqa/ there, no variable
        T2IComplexScorer(root)
    monkeypatch.setenv("EVALKIT_BLIP_VQA_DIR", str(BlipVQAScorer.write_tiny(tmp_path / "blip")))
    scorer = T2IComplexScorer(root)
    assert scorer.spatial.structure == "complex" and scorer.clip.structure == "complex"
    assert scorer.spatial.path == str(root / "t2i-spatial") and scorer.bvqa.path == str(tmp_path / "blip")
    modules = [id(m) for m in scorer.torch_modules()]  # what --device moves: every part's model
    assert all(id(m) in modules for m in (scorer.bvqa.model, scorer.spatial.model, scorer.clip.clip))
    assert scorer.fingerprint() == scorer.fingerprint()


class ComplexSuite(Suite):
    name, category, splits, default_scorers = "mini-complex", "complex", ("val",), ("t2i-complex",)

    def load_items(self, split):
        return [
            PromptItem(
                "The red hat was on top of the brown coat rack.",
                "complex",
                split,
                "m0",
                meta={"complex_type": "spatial"},
            ),
            PromptItem("A black dog is chasing a red ball.", "complex", split, "m1", meta={"complex_type": "action"}),
            PromptItem(
                "The smooth black river flowed quickly.",
                "complex",
                split,
                "m2",
                meta={"complex_type": "spatial-action"},
            ),
        ]


def test_run_through_evaluate_with_the_work_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_NOUN_PHRASE_SPLITTER", "auto")  # B-VQA's phrases: spaCy where installed, else rules
    from evalkit.harness.cache import WorkCache
    from evalkit.decoders.dummy import DummyDecoder
    from evalkit.priors.dummy import DummyPrior
    from evalkit.harness.runner import evaluate

    scorer = T2IComplexScorer.tiny()
    protocol = Protocol(decoder="dummy", num_inference_steps=1, guidance_scale=1.0, resolution=16, images_per_prompt=2)
    kwargs = dict(split="val", batch_size=4, progress=False, cache=WorkCache(tmp_path / "cache"))
    rows, _ = evaluate(
        {"d": DummyPrior()},
        DummyDecoder(),
        ComplexSuite(),
        {"t2i-complex": scorer},
        protocol,
        tmp_path / "run",
        **kwargs,
    )
    assert len(rows) == 6
    by_item = {r["item_id"]: r for r in rows if r["seed"] == 42}
    assert by_item["m0"]["details"]["complex_type"] == "spatial" and "t2i-spatial" in by_item["m0"]["details"]["parts"]
    assert set(by_item["m1"]["details"]["parts"]) == {"blip-vqa", "t2i-clip"}
    assert by_item["m1"]["questions"]  # B-VQA's questions shown with the row
    assert "no spatial relation" in by_item["m2"]["details"]["not_applicable"]  # needs the spatial part: none
    again, _ = evaluate(
        {"d": DummyPrior()}, DummyDecoder(), ComplexSuite(), {"t2i-complex": scorer}, protocol, None, **kwargs
    )  # read back from the cache
    assert [r["score"] for r in again] == [r["score"] for r in rows]
    assert [r["details"] for r in again] == [r["details"] for r in rows]
