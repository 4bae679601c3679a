import numpy as np
import pytest
import torch

from evalkit.contracts import Batch
from evalkit.world.models.clip import WorldCLIP
from evalkit.embedding_metrics import control_items, embedding_rows, summarize
from evalkit.eval_prior import headroom
from evalkit.priors.calibration import NonePrior, OraclePrior
from evalkit.suites import load_suite


class SubsetSuite:
    """The first prompts of a synthetic suite (keeps the test fast)."""

    def __init__(self, suite, n):
        self.suite, self.n, self.name = suite, n, suite.name + f"-first{n}"

    def items(self, split):
        items = self.suite.items(split)
        return items[: self.n // 2] + [i for i in items if i.seen is False][: self.n // 2]

    def version(self, split):
        return self.suite.version(split) + f"-{self.n}"

    def __getattr__(self, name):
        return getattr(self.suite, name)


def clip():
    torch.manual_seed(0)
    return WorldCLIP.tiny().eval()


def test_own_render_is_perfect_and_swap_control_is_negative():
    model, suite = clip(), SubsetSuite(load_suite("synth-color"), 12)
    own = OraclePrior(model, independent=False)  # the item's own render: margin must be exactly cos 1 − cos(swap)
    rows = embedding_rows(own, suite, model, seeds=(42, 43))
    assert len(rows) == 24
    assert all(abs(r["cos_true"] - 1) < 1e-4 for r in rows)
    assert all(1 <= r["rank"] <= 12 and (r["recall1"] == 0 or r["rank"] == 1) for r in rows)
    assert all(r["binding"] == 1.0 for r in rows if r["cos_swapped"] < 1 - 1e-4)
    swapped = embedding_rows(own, suite, model, seeds=(42, 43), control="swapped")
    assert all(abs(r["cos_swapped"] - 1) < 1e-4 for r in swapped)  # the swapped prompt predicts the swapped render
    assert np.mean([r["margin"] for r in swapped]) < 0


def test_summary_and_headroom_rows():
    model, suite = clip(), SubsetSuite(load_suite("synth-shape"), 8)
    rows = embedding_rows(OraclePrior(model, independent=False), suite, model, seeds=(42,), prior_name="oracle")
    rows += embedding_rows(NonePrior(model), suite, model, seeds=(42,), prior_name="none")
    summary = summarize(rows, n_boot=100)
    seen_values = {(r["prior"], r["seen"], r["metric"]) for r in summary}
    assert ("oracle", "unseen", "margin") in seen_values and ("none", "all", "binding") in seen_values
    # the own render has cosine 1: always above the mean embedding, on every paired item
    room = headroom(rows, gate="cos_true", metrics=("cos_true", "margin"))
    assert {r["seen"] for r in room} == {"all", "seen", "unseen"}
    assert all(r["oracle_cos_true"] > r["none_cos_true"] and r["z_none_cos_true"] > 0 for r in room)
    # a reference equal to the oracle has no headroom
    same = rows + [dict(r, prior="text") for r in rows if r["prior"] == "oracle"]
    assert not any(r["headroom"] for r in headroom(same, gate="cos_true", metrics=("cos_true",)))


def test_oracle_averages_independent_renders():
    from evalkit.priors.calibration import INDEPENDENT_SEED_OFFSET

    model = clip()
    items = load_suite("synth-color").items("val")[:3]
    batch = Batch(items, [42, 43, 44])
    mean = OraclePrior(model, independent=True, samples=3).predict(batch)
    single = OraclePrior(model, independent=True)
    parts = [single.predict(Batch(items, [s + k * INDEPENDENT_SEED_OFFSET for s in (42, 43, 44)])) for k in range(3)]
    torch.testing.assert_close(mean, sum(parts) / 3)
    assert not torch.allclose(parts[0], parts[1])  # the renders differ
    with pytest.raises(ValueError, match="independent"):
        OraclePrior(model, samples=2)


def test_controls_change_prompts():
    items = load_suite("synth-texture").items("val")[:5]
    assert [i.prompt for i in control_items(items, "swapped")] == [i.swapped_prompt for i in items]
    randomised = control_items(items, "random")
    assert all(a.prompt != b.prompt for a, b in zip(items, randomised))
    shuffled = control_items(items, "shuffled")
    assert all(sorted(a.prompt.split()) == sorted(b.prompt.split()) for a, b in zip(items, shuffled))


def test_paired_comparison_and_seed_spread():
    from evalkit.eval_prior import compare, default_comparisons

    rows = []
    for item in range(40):
        for seed in (42, 43):
            for training_seed in (0, 1, 2):
                base = {
                    "control": "",
                    "item_id": f"i{item}",
                    "seed": seed,
                    "category": "color",
                    "seen": item % 4 != 0,
                    "training_seed": training_seed,
                }
                a = 0.05 + 0.01 * ((item * 7) % 5)
                rows.append({**base, "prior": "projection", "margin": a, "binding": float(a > 0.06)})
                rows.append({**base, "prior": "eclipse", "margin": a + 0.02 + 0.001 * training_seed, "binding": 1.0})
    assert default_comparisons(["oracle", "eclipse", "projection"]) == [("projection", "eclipse")]
    out = compare(rows, [("projection", "eclipse")])
    margin = next(c for c in out if c["metric"] == "margin" and c["seen"] == "all")
    assert abs(margin["difference"] - 0.021) < 1e-9 and margin["ci_low"] > 0.02 and margin["n"] == 80
    assert {c["seen"] for c in out} == {"all", "seen", "unseen"}
    summary = summarize([r for r in rows if r["prior"] == "eclipse"], metrics=("margin",), n_boot=50)
    spread = next(s for s in summary if s["seen"] == "all")
    assert spread["n_training_seeds"] == 3 and abs(spread["seed_sd"] - 0.001) < 1e-9
