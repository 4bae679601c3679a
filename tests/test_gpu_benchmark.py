"""benchmarks/speed/gpu.py: skips cleanly without CUDA; its tiny CPU mode runs every variant through evalkit's run
path."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "speed" / "gpu.py"
LADDER = ["fp32", "bf16", "bf16+sdpa", "bf16+sdpa+cl", "bf16+sdpa+cl+compile", "fp16+sdpa", "fp16+sdpa+offload"]


def _run(*args, cuda_visible=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if cuda_visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


@pytest.fixture(scope="module")
def gpu_module():
    spec = importlib.util.spec_from_file_location("speed_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_skips_without_cuda(tmp_path):
    out = tmp_path / "skip.json"
    result = _run("--device", "cuda", "--json", str(out), cuda_visible="")  # no device, even on a GPU machine
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skipped: no CUDA device (")
    assert "skipped" in json.loads(out.read_text())


def test_variant_names(gpu_module):
    variant = gpu_module.Variant.parse("bf16+sdpa+cl+compile")
    assert (variant.dtype, variant.sdpa, variant.channels_last, variant.compile) == ("bf16", True, True, True)
    assert variant.run_flags() == {"dtype": "decoder=bfloat16", "attention": "sdpa"}
    assert variant.injected() == ["channels_last", "compile"]
    offload = gpu_module.Variant.parse("fp16+sdpa+offload")
    assert offload.run_flags() == {"dtype": "decoder=float16", "attention": "sdpa", "offload": True}
    assert offload.injected() == []
    assert gpu_module.Variant.parse("fp32").run_flags() == {"dtype": "decoder=float32", "attention": "eager"}
    assert gpu_module.default_variants(True) == LADDER
    assert "bf16+sdpa+cl+compile" not in gpu_module.default_variants(False)
    for bad in ("int8", "fp32+fast", "bf16+sdpa+sdpa"):
        with pytest.raises(ValueError):
            gpu_module.Variant.parse(bad)
    with pytest.raises(SystemExit):
        gpu_module.main(["--device", "cpu", "--stack", "sd15"])


def test_tiny_cpu_mode_runs_every_variant(tmp_path):
    out = tmp_path / "gpu.json"
    # --compile-backend eager: the compile path (inject, dynamo tracing) without the minutes of CPU code generation
    result = _run(
        "--device",
        "cpu",
        "--size",
        "tiny",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--repeats",
        "1",
        "--compile",
        "--compile-backend",
        "eager",
        "--out",
        str(tmp_path / "runs"),
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    assert "code-path check, not a measurement" in text and "fewer steps" in text
    assert (
        text.count("random weights identical in every variant (decoder_version and prior version fingerprints): yes")
        == 2
    )
    data = json.loads(out.read_text())
    stacks = {s["stack"]: s for s in data["stacks"]}
    assert set(stacks) == {"karlo", "kandinsky22"} and data["machine"]["torch"]

    names = {stack: [v["variant"] for v in s["variants"]] for stack, s in stacks.items()}
    assert names["kandinsky22"] == names["karlo"] == LADDER
    assert text.count("| × vs fp32 |") == 2
    for stack, s in stacks.items():
        assert s["batch_size"] == 2 and s["steps"] == 2 and s["batches"] == 2 and s["weights_identical"] is True
        for row in s["variants"]:
            assert "error" not in row, (stack, row)
            assert f"| {row['variant']} | dtype=decoder=" in text
            # one evalkit run per variant: its folder, its results.json, one decoder call per batch
            run_dir = Path(row["run_dir"])
            assert run_dir.parent == tmp_path / "runs" / stack / row["variant"].replace("+", "_")
            results = json.loads((run_dir / "results.json").read_text())
            assert results["config"]["random_init"] == "tiny" and results["images"] == 4 == row["images"]
            assert results["config"]["attention"] == ("sdpa" if row["sdpa"] else "eager")
            assert results["config"]["offload"] is row["offload"]
            assert len(row["decoder_times"]) == 2 and len(row["times"]) == 1
            assert row["images_per_s"] > 0 and row["ratio_to_baseline"] > 0 and 0 < row["prior_share"] < 1
            assert set(row["timings_s"]) >= {"text", "prior", "decoder", "scorer", "io"}
            dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[row["dtype"]]
            assert row["placements"]["decoder"]["dtype"] == dtype and row["placements"]["priors"]
            # eager processors in the baseline, the SDPA ones (…2_0) otherwise: nothing carried over between runs
            assert ("2_0" in row["attention"]) == row["sdpa"], row["attention"]
            assert row["same_weights_as_baseline"] is True and row["plugins_released"] is True
            if row["channels_last"]:
                assert row["channels_last_kept"] is True
            limit = 1e-4 if row["dtype"] == "fp32" else 0.1  # same function up to rounding (8-bit PNGs)
            assert row["mean_abs_diff_vs_baseline"] < limit, row
        assert s["variants"][0]["ratio_to_baseline"] == 1.0
