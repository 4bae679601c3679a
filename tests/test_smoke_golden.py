"""CI's regression gate: the smoke protocol on the shipped embedded stack against results/golden/smoke.

Portability — the same protocol on another numeric path passes — and power — injected real regressions
fail — on the real stack. The runs share one work cache (per module), so the later tests reuse the
golden run's embeddings and images where their fault leaves them valid (every faulty prior or scorer
has cache keys of its own; a faulty decoder runs uncached).
"""

import os
from pathlib import Path

import pytest
import torch

from evalkit.harness import faults
from evalkit.harness.presets import GOLDEN_DIR, compare_with_golden, gate_against_golden, run_smoke
from evalkit.world.attributes import CATEGORIES


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("smoke-cache"))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache_dir):
    # an empty cache: every embedding, image and score is computed, as in an uncached run
    return run_smoke(tmp_path_factory.mktemp("smoke"), cache=True, progress=False, cache_dir=cache_dir)


def _eclipse_binding(comparison) -> dict:
    return {
        c.key[3]: c for c in comparison.changes if c.key[0] == "eclipse" and c.key[4] == "all" and c.key[5] == "binding"
    }


def test_smoke_protocol_matches_the_golden(smoke_run):
    text, failed = compare_with_golden(smoke_run)
    destination = os.environ.get("EVALKIT_CI_REPORT")
    if destination:  # .ci/run prints it after the tests
        Path(destination).write_text(text)
    print(text)
    assert not failed, text
    assert text.count("| paired ") == 18 * len(CATEGORIES)  # every golden row, tested on its per-image differences


def test_the_smoke_decoded_in_bfloat16_passes_against_the_float32_golden(tmp_path, cache_dir):
    """Another numeric path: bfloat16 autocast changes most pixels of most images (as another CPU's kernels
    do), so this is the gate's portability at its hardest; it must hold, and say what differed."""
    run_dir = run_smoke(tmp_path, cache=True, progress=False, cache_dir=cache_dir, dtype="bfloat16")
    text, failed = compare_with_golden(run_dir)
    assert not failed, text
    assert "decoder_dtype: float32 → bfloat16" in text
    moved = [c for c in gate_against_golden(run_dir).changes if c.new != c.base]
    assert len(moved) > 20  # the images really differ: this is not the golden's own run again


def test_the_smoke_on_one_thread_passes_against_the_golden(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the shape suite: the one that failed on another CPU before the gate was rebuilt
        run_dir = run_smoke(tmp_path, progress=False, suites=["synth-shape"])
    finally:
        torch.set_num_threads(threads)
    comparison = gate_against_golden(run_dir)
    assert not comparison.by_status("regression") and not comparison.by_status("improvement")
    assert {c.key[1] for c in comparison.changes} == {"synth-shape"} and len(comparison.changes) == 18
    assert any(note.startswith("threads:") for note in comparison.notes)


# δ = 0.15: drops of 0.039 (spatial: ECLIPSE's spatial and shape binding scores are mostly 0, so a δ-drop
# lowers only the images above 0) to 0.105 (colour), all above the gate's limit of ≈ 0.027 (3 × √½ / 80)
@pytest.mark.parametrize("bias", [0.15])
def test_a_scorer_biased_down_fails_the_gate_in_every_category(tmp_path, cache_dir, smoke_run, bias):
    run_dir = run_smoke(
        tmp_path,
        cache=True,
        progress=False,
        cache_dir=cache_dir,
        priors=["eclipse"],
        inject=faults.injector(faults.bias_scorer("binding", bias)),
    )
    comparison = gate_against_golden(run_dir)
    rows = _eclipse_binding(comparison)
    assert set(rows) == set(CATEGORIES)  # (the oracle's rows are missing: failed in any case)
    for category, change in rows.items():
        assert change.paired and change.status == "regression", (category, change)
        assert 0 < change.base - change.new <= bias + 1e-9  # the drop injected (less where a score was below it)
    assert not [c for c in comparison.changes if c.key[5] == "analytic" and c.status == "regression"]


def test_a_prior_with_noised_weights_fails_the_gate(tmp_path, cache_dir, smoke_run):
    run_dir = run_smoke(
        tmp_path,
        cache=True,
        progress=False,
        cache_dir=cache_dir,
        priors=["eclipse"],
        suites=["synth-color"],
        inject=faults.injector(faults.noise_prior("eclipse", 0.5)),
    )
    comparison = gate_against_golden(run_dir)
    color = _eclipse_binding(comparison)["color"]
    assert color.base - color.new > 0.1  # the binding score falls, but its own paired z stays near −2.6 ...
    flagged = {
        c.key[4] for c in comparison.by_status("regression") if c.key[0] == "eclipse" and c.key[5] == "embedding-cosine"
    }
    assert flagged == {"all", "seen", "unseen"}  # ... the embedding row sees every image move


def test_a_decoder_taking_fewer_steps_than_the_protocol_fails_the_gate(tmp_path):
    run_dir = run_smoke(tmp_path, progress=False, suites=["synth-color"], inject=faults.injector(faults.fewer_steps(3)))
    comparison = gate_against_golden(run_dir)
    flagged = {(c.key[0], c.key[5]) for c in comparison.by_status("regression") if c.key[4] == "all"}
    assert ("oracle", "binding") in flagged and ("eclipse", "binding") in flagged


def test_the_golden_is_the_smoke_protocol():
    import json

    from evalkit.harness.presets import smoke_config
    from evalkit.harness.runner import prompt_subsets

    golden = json.loads((GOLDEN_DIR / "results.json").read_text())
    config = smoke_config("unused")
    assert golden["protocol"]["dtype"] == config.dtype == "float32"
    assert sorted(golden["suite_versions"]) == sorted(config.suites)
    assert {s: e["prompts"] for s, e in golden["prompt_subsets"].items()} == {s: config.limit for s in config.suites}
    assert golden["environment"]["cpu_model"] and "threads" in golden["environment"]
    assert prompt_subsets([{"suite": "s", "item_id": "b"}, {"suite": "s", "item_id": "a"}])["s"]["prompts"] == 2
