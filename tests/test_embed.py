"""``evalkit embed``: real-format datasets (tar shards, CSV) → raw CLIP image embeddings, and their reader."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.data.embeddings import EmbeddingFolder, NotAnEmbeddingFolderError
from evalkit.data.tiny import write_tiny_clip, write_tiny_prior_pipeline, write_world_dataset
from evalkit.embed import STOP_AFTER_UNITS_VARIABLE, embed_dataset
from evalkit.errors import ConfigMismatchError, CorruptFileError, RunExistsError, WeightsNotFoundError

REPO = Path(__file__).resolve().parents[1]
CORRUPT, EMPTY = "000005", "000010"
LOOSE = 0.2  # the fixture dataset has 2 bad records of 24 on purpose


@pytest.fixture(scope="module")
def world_data(tmp_path_factory):
    return write_world_dataset(
        tmp_path_factory.mktemp("data"),
        n=24,
        shards=3,
        image_px=48,
        corrupt_keys=(CORRUPT,),
        empty_caption_keys=(EMPTY,),
    )


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return write_tiny_prior_pipeline(tmp_path_factory.mktemp("k22prior"), embedding_dim=16, image_size=32)


@pytest.fixture(scope="module")
def shard_run(world_data, encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "shards"
    embed_dataset(world_data["shards"], encoder, out, batch_size=3, max_bad_fraction=LOOSE, progress=False)
    return out


def _by_key(folder: EmbeddingFolder) -> dict[str, np.ndarray]:
    rows = range(len(folder))
    return dict(zip(folder.keys(rows), folder.image_embeds(rows).numpy()))


def test_shards_and_csv_give_the_same_embeddings(world_data, encoder, shard_run, tmp_path):
    csv_out = tmp_path / "csv"
    embed_dataset(
        world_data["csv_dir"],
        encoder,
        csv_out,
        batch_size=5,
        rows_per_shard=8,
        num_workers=2,
        max_bad_fraction=LOOSE,
        progress=False,
    )
    a, b = EmbeddingFolder.open(shard_run), EmbeddingFolder.open(csv_out, verify=True)
    assert len(a) == len(b) == 22
    ea, eb = _by_key(a), _by_key(b)
    assert sorted(ea) == sorted(eb) == sorted(k for k in world_data["keys"] if k not in (CORRUPT, EMPTY))
    for key in ea:
        np.testing.assert_allclose(ea[key], eb[key], rtol=1e-3, atol=1e-3)
    assert a.captions(range(len(a))) == [world_data["captions"][int(k)] for k in a.keys(range(len(a)))]
    assert a.counts["skipped_by_reason"] == b.counts["skipped_by_reason"]


def test_bad_records_are_skipped_counted_and_too_many_fail_with_exit_2(world_data, encoder, shard_run, tmp_path):
    from click.testing import CliRunner

    from evalkit.cli import cli

    manifest = json.loads((shard_run / "embeddings.json").read_text())
    counts = manifest["counts"]
    assert (counts["seen"], counts["written"], counts["skipped"]) == (24, 22, 2)
    assert counts["skipped_by_reason"]["undecodable image"] == 1 and counts["skipped_by_reason"]["empty caption"] == 1
    assert {(e["key"], e["reason"]) for e in manifest["skipped_examples"]} == {
        (CORRUPT, "undecodable image"),
        (EMPTY, "empty caption"),
    }
    assert all(e["unit"] == 0 for e in manifest["skipped_examples"] if e["key"] == CORRUPT)
    assert counts["truncated_captions"] > 0  # the tiny tokenizer holds 16 tokens: some world captions exceed it
    stats = json.loads((shard_run / "stats" / "stats_1.json").read_text())
    assert stats["skipped"] == [{"key": EMPTY, "reason": "empty caption"}] and stats["written"] == 7

    out = tmp_path / "strict"
    args = ["embed", "--data", world_data["shards"], "--image-encoder", str(encoder), "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert CORRUPT in result.output and EMPTY in result.output and "--max-bad-fraction" in result.output
    assert len(list((out / "stats").glob("stats_*.json"))) == 3 and not (out / "embeddings.json").exists()
    resumed = CliRunner().invoke(cli, args + ["--resume", "--max-bad-fraction", str(LOOSE)])
    assert resumed.exit_code == 0, resumed.output
    assert "embedded 22 of 24" in resumed.output and "1 undecodable image" in resumed.output


def test_embeddings_are_the_raw_encoder_output(world_data, encoder, shard_run):
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(encoder / "image_encoder").eval()
    processor = CLIPImageProcessor.from_pretrained(encoder / "image_processor")
    folder = EmbeddingFolder.open(shard_run)
    keys = folder.keys(range(len(folder)))
    images = [Image.open(world_data["csv_dir"] / "images" / f"{k}.jpg").convert("RGB") for k in keys]
    with torch.no_grad():
        expected = model(pixel_values=processor(images=images, return_tensors="pt").pixel_values).image_embeds
    got = folder.image_embeds(range(len(folder)))
    torch.testing.assert_close(got, expected.half().float(), rtol=2e-3, atol=2e-3)
    assert not torch.allclose(got.norm(dim=-1), torch.ones(len(got)), atol=1e-2)  # raw, not L2-normalised
    assert folder.encoder["embedding_dim"] == folder.embedding_dim == 16 and folder.encoder["fingerprint"]


def test_two_processes_write_what_one_process_writes(world_data, encoder, shard_run, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "two"
    done = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "evalkit",
            "embed",
            "--data",
            world_data["shards"],
            "--image-encoder",
            str(encoder),
            "--out",
            str(out),
            "--batch-size",
            "3",
            "--max-bad-fraction",
            str(LOOSE),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Manifest:") == 1  # process 0 alone reports
    one, two = (json.loads((d / "embeddings.json").read_text()) for d in (shard_run, out))
    assert two["environment"]["processes"] == 2
    assert one["counts"] == two["counts"] and one["skipped_examples"] == two["skipped_examples"]
    assert [f["path"] for f in one["files"]] == [f["path"] for f in two["files"]]
    a, b = EmbeddingFolder.open(shard_run), EmbeddingFolder.open(out, verify=True)
    for unit in range(3):
        np.testing.assert_allclose(
            np.load(out / f"img_emb/img_emb_{unit}.npy"),
            np.load(shard_run / f"img_emb/img_emb_{unit}.npy"),
            rtol=1e-3,
            atol=1e-3,
        )
    rows = range(len(a))
    assert a.keys(rows) == b.keys(rows) and a.captions(rows) == b.captions(rows)


def test_a_killed_run_resumes_without_redoing_finished_units(world_data, encoder, shard_run, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    monkeypatch.setenv(STOP_AFTER_UNITS_VARIABLE, "1")
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(world_data["shards"], encoder, out, batch_size=3, max_bad_fraction=LOOSE, progress=False)
    monkeypatch.delenv(STOP_AFTER_UNITS_VARIABLE)
    assert (out / "stats" / "stats_0.json").is_file() and not (out / "stats" / "stats_1.json").exists()
    assert list((out / "stats").glob("*.tmp.*"))  # the unit in flight left a half-written file
    finished = {p: p.stat().st_mtime_ns for p in (out / "img_emb" / "img_emb_0.npy", out / "stats" / "stats_0.json")}

    with pytest.raises(RunExistsError, match="--resume"):
        embed_dataset(world_data["shards"], encoder, out, progress=False)
    with pytest.raises(ConfigMismatchError, match="min_size"):
        embed_dataset(world_data["shards"], encoder, out, resume=True, min_size=8, progress=False)
    embed_dataset(world_data["shards"], encoder, out, batch_size=3, max_bad_fraction=LOOSE, resume=True, progress=False)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # unit 0 was not recomputed
    assert not [p for p in out.rglob("*") if ".tmp." in p.name]
    one, resumed = (json.loads((d / "embeddings.json").read_text()) for d in (shard_run, out))
    assert one["counts"] == resumed["counts"]
    assert [(f["path"], f["rows"], f["sha256"]) for f in one["files"]] == [
        (f["path"], f["rows"], f["sha256"]) for f in resumed["files"]
    ]


def test_the_reader_reads_back_and_refuses_damaged_or_foreign_folders(shard_run, tmp_path):
    folder = EmbeddingFolder.open(shard_run, verify=True)
    assert len(folder) == 22 and folder.units == 3
    everything = folder.all_image_embeds()
    assert everything.dtype == torch.float32 and everything.shape == (22, 16)
    picks = [21, 0, 7, 7, 12]
    torch.testing.assert_close(folder.image_embeds(picks), everything[picks])
    assert folder.captions(picks)[2] == folder.captions([7])[0]
    mean, std = folder.embedding_stats(chunk_rows=5)
    torch.testing.assert_close(mean, everything.double().mean(0).float())
    torch.testing.assert_close(std, everything.double().std(0).float())
    assert sum(s["written"] for s in folder.stats()) == 22
    with pytest.raises(IndexError):
        folder.image_embeds([22])

    copy = tmp_path / "copy"
    shutil.copytree(shard_run, copy)
    target = copy / "img_emb" / "img_emb_2.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # same shape, one value changed
    target.write_bytes(bytes(data))
    EmbeddingFolder.open(copy)  # shapes still agree: only the checksum can tell
    with pytest.raises(CorruptFileError, match=r"img_emb_2\.npy.*sha256"):
        EmbeddingFolder.open(copy, verify=True)
    target.unlink()
    with pytest.raises(CorruptFileError, match=r"img_emb_2\.npy.*missing"):
        EmbeddingFolder.open(copy)
    with pytest.raises(NotAnEmbeddingFolderError, match=r"made by `evalkit embed`"):
        EmbeddingFolder.open(tmp_path)


def test_a_whole_clip_model_folder_is_an_image_encoder_and_a_wrong_folder_names_the_layouts(world_data, tmp_path):
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel

    from evalkit.priors.real import HFTextEncoder

    clip = write_tiny_clip(tmp_path / "clip", embedding_dim=32, image_size=32)
    out = tmp_path / "out"
    embed_dataset(world_data["csv"], clip, out, max_bad_fraction=LOOSE, progress=False)
    folder = EmbeddingFolder.open(out)
    assert folder.embedding_dim == 32 and folder.encoder["layout"] == "clip-model"
    model = CLIPModel.from_pretrained(clip).eval()
    processor = CLIPImageProcessor.from_pretrained(clip)
    keys = folder.keys(range(4))
    images = [Image.open(world_data["csv_dir"] / "images" / f"{k}.jpg") for k in keys]
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt").pixel_values
        expected = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    torch.testing.assert_close(folder.image_embeds(range(4)), expected.half().float(), rtol=2e-3, atol=2e-3)
    text = HFTextEncoder.from_pretrained(text_encoder_path=clip, tokenizer_path=clip)  # the same folder's text tower
    assert text.encode_text(["a red star"]).text_embeds.shape == (1, 32)

    for wrong in (tmp_path / "empty", clip.parent / "nothing-here"):
        wrong.mkdir(exist_ok=True) if wrong.name == "empty" else None
        with pytest.raises(WeightsNotFoundError, match=r"image_encoder/.*CLIPModel"):
            embed_dataset(world_data["csv"], wrong, tmp_path / f"never-{wrong.name}", progress=False)


def test_a_wrong_spec_fails_early_and_manifest_columns_are_checked(tmp_path, encoder):
    """Records that are all bad (here: images that do not exist) stop the run after 1,000 records, not at the
    end; the finished units stay on disk. An unknown column names the columns there are."""
    import pyarrow as pa
    import pyarrow.csv as pc

    from evalkit.data.sources import BadRecordsError, DataSourceError, decode_image, open_source
    from evalkit.data.tiny import _jpeg

    rows = 1_200
    pc.write_csv(
        pa.table({"file_name": [f"gone/{i}.jpg" for i in range(rows)], "TEXT": ["a red star"] * rows}),
        tmp_path / "data.csv",
    )
    out = tmp_path / "out"
    with pytest.raises(BadRecordsError, match=r"missing image.*gone/0 \(missing image\).*checked early"):
        embed_dataset(tmp_path / "data.csv", encoder, out, rows_per_shard=100, progress=False)
    assert len(list((out / "stats").glob("stats_*.json"))) == 10
    with pytest.raises(DataSourceError, match=r"no such column; its columns: file_name, TEXT"):
        open_source(tmp_path / "data.csv", caption_column="caption")

    from PIL import Image

    small = _jpeg(Image.new("RGB", (48, 40)))
    assert decode_image(small, min_size=41)[1] == "too small" and decode_image(small, min_size=40)[1] is None
    assert decode_image(b"not an image")[1] == "undecodable image"
