"""The real-model path end to end on tiny models saved in the public layouts: an ECLIPSE-Karlo prior
checkpoint → the Karlo decoder stack → BLIP-VQA on a T2I-CompBench suite, then export to T2I-CompBench's
folder format and import back."""

import json
import os

import pytest
from click.testing import CliRunner

from evalkit.cli import cli

pytestmark = pytest.mark.skipif(
    not os.environ.get("EVALKIT_PROMPTS_DIR"), reason="needs the T2I-CompBench prompt files"
)


def test_eclipse_karlo_blip_on_t2i_compbench_then_export_and_import(tmp_path, monkeypatch):
    from evalkit.decoders.karlo import KarloDecoder
    from evalkit.priors.real import tiny_checkpoint
    from evalkit.scorers.blip_vqa import BlipVQAScorer

    tiny_checkpoint(tmp_path / "prior", kind="eclipse")
    KarloDecoder.tiny().save_pretrained(tmp_path / "karlo")
    BlipVQAScorer.write_tiny(tmp_path / "blip")
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--prior",
            "eclipse-karlo",
            "--prior-path",
            f"eclipse-karlo={tmp_path / 'prior'}",
            "--decoder",
            "karlo",
            "--decoder-path",
            str(tmp_path / "karlo"),
            "--scorer",
            "blip-vqa",
            "--scorer-path",
            f"blip-vqa={tmp_path / 'blip'}",
            "--suite",
            "t2i-compbench-color",
            "--limit",
            "2",
            "--images-per-prompt",
            "2",
            "--num-inference-steps",
            "2",
            "--out",
            str(tmp_path / "runs"),
            "--no-cache",
        ],
    )
    assert result.exit_code == 0, result.output
    [run_dir] = list((tmp_path / "runs").iterdir())
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(s["questions"] and 0 < s["score"] < 1 for s in samples)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["protocol"]["decoder"] == "karlo" and results["priors"]["eclipse-karlo"]["trainable_parameters"] > 0

    exported = CliRunner().invoke(cli, ["export", str(run_dir), str(tmp_path / "export")])
    assert exported.exit_code == 0, exported.output
    folder = tmp_path / "export" / "eclipse-karlo" / "color"
    assert len(list((folder / "samples").iterdir())) == 4
    monkeypatch.setenv("EVALKIT_BLIP_VQA_DIR", str(tmp_path / "blip"))
    imported = CliRunner().invoke(
        cli,
        [
            "import",
            str(folder),
            "--suite",
            "t2i-compbench-color",
            "--scorer",
            "blip-vqa",
            "--out",
            str(tmp_path / "imported"),
        ],
    )
    assert imported.exit_code == 0, imported.output
    [import_dir] = list((tmp_path / "imported").iterdir())
    again = sorted(
        (s["item_id"], s["seed"], round(s["score"], 6))
        for s in map(json.loads, (import_dir / "samples.jsonl").read_text().splitlines())
    )
    assert again == sorted((s["item_id"], s["seed"], round(s["score"], 6)) for s in samples)


def test_eclipse_kandinsky_prior_into_the_kandinsky_decoder(tmp_path):
    from evalkit.decoders.kandinsky import Kandinsky22Decoder
    from evalkit.priors.real import tiny_checkpoint

    from tests.test_fidelity import image_encoder

    decoder = Kandinsky22Decoder.tiny()
    decoder.save_pretrained(tmp_path / "k22")
    tiny_checkpoint(tmp_path / "prior", kind="eclipse", embedding_dim=decoder.embedding_dim)
    image_encoder(tmp_path / "prior" / "image_encoder")  # the zero-image negative of the Kandinsky prior pipeline
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--prior",
            "eclipse-kandinsky22",
            "--prior-path",
            f"eclipse-kandinsky22={tmp_path / 'prior'}",
            "--decoder",
            "kandinsky22",
            "--decoder-path",
            str(tmp_path / "k22"),
            "--scorer",
            "dummy",
            "--suite",
            "t2i-compbench-color",
            "--limit",
            "2",
            "--images-per-prompt",
            "1",
            "--num-inference-steps",
            "2",
            "--out",
            str(tmp_path / "runs"),
            "--no-cache",
        ],
    )
    assert result.exit_code == 0, result.output
    [run_dir] = list((tmp_path / "runs").iterdir())
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 2
    # a 32-d Karlo-space prior into the 16-d Kandinsky decoder is refused before anything is written
    tiny_checkpoint(tmp_path / "karlo-prior", kind="eclipse", embedding_dim=32)
    wrong = CliRunner().invoke(
        cli,
        [
            "run",
            "--prior",
            "eclipse-karlo",
            "--prior-path",
            f"eclipse-karlo={tmp_path / 'karlo-prior'}",
            "--decoder",
            "kandinsky22",
            "--decoder-path",
            str(tmp_path / "k22"),
            "--suite",
            "t2i-compbench-color",
            "--scorer",
            "dummy",
            "--out",
            str(tmp_path / "wrong"),
        ],
    )
    assert (
        wrong.exit_code == 2
        and "cannot feed decoder 'kandinsky22'" in wrong.output
        and not (tmp_path / "wrong").exists()
    )
