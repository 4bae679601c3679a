import pytest
import torch

from evalkit.contracts import Protocol
from evalkit.decoders.dummy import DummyDecoder
from evalkit.errors import EmbeddingContractError, EvalkitError
from evalkit.priors.dummy import DummyPrior, DummyPriorConfig
from evalkit.harness.runner import aggregate, evaluate
from evalkit.scorers.dummy import DummyScorer
from evalkit.suites import load_suite

PROTOCOL = Protocol(decoder="dummy", num_inference_steps=1, guidance_scale=1.0, resolution=16, images_per_prompt=2)


def test_evaluate_rows_images_and_batch_independence(tmp_path):
    suite = load_suite("synth-color")
    priors = {"a": DummyPrior(), "b": DummyPrior(DummyPriorConfig(seed=1))}
    rows, timings = evaluate(
        priors,
        DummyDecoder(),
        suite,
        {"dummy": DummyScorer()},
        PROTOCOL,
        tmp_path,
        limit=3,
        batch_size=4,
        progress=False,
    )
    assert len(rows) == 2 * 3 * 2 and set(timings) == {"text", "prior", "decoder", "scorer", "io"}
    assert all((tmp_path / r["image_path"]).is_file() for r in rows)
    assert {r["seed"] for r in rows} == {42, 43}
    # the same run with another batch size gives the same scores (each image from its own seed)
    again, _ = evaluate(
        priors, DummyDecoder(), suite, {"dummy": DummyScorer()}, PROTOCOL, None, limit=3, batch_size=5, progress=False
    )
    assert [r["score"] for r in again] == pytest.approx([r["score"] for r in rows], abs=1e-6)
    results = aggregate(rows, {suite.name: suite.version()}, PROTOCOL, {"a": 1, "b": 2}, n_boot=50)
    assert {(r.prior, r.seen) for r in results} >= {("a", "all"), ("a", "seen"), ("b", "all")}
    assert all(r.ci_low <= r.value <= r.ci_high and r.n > 0 for r in results)


def test_contract_mismatch_stops_before_generation(tmp_path):
    wide = DummyPrior(DummyPriorConfig(embedding_dim=12))
    with pytest.raises(EmbeddingContractError):
        evaluate({"wide": wide}, DummyDecoder(), load_suite("synth-color"), {}, PROTOCOL, tmp_path, limit=1)
    assert not (tmp_path / "images").exists()


def test_nan_embeddings_fail_loudly():
    class NanPrior(DummyPrior):
        def predict(self, batch):
            return torch.full((len(batch), self.embedding_dim), float("nan"))

    with pytest.raises(EvalkitError, match="NaN"):
        evaluate(
            {"nan": NanPrior()}, DummyDecoder(), load_suite("synth-color"), {}, PROTOCOL, None, limit=1, progress=False
        )
