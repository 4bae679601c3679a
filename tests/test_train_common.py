import pytest
import torch

from evalkit.priors.dummy import DummyPrior, DummyPriorConfig
from evalkit.train.common import (
    JsonlLogger,
    TrainingDivergedError,
    check_finite,
    load_checkpoint,
    save_checkpoint,
    set_seed,
)


def make():
    model = DummyPrior(DummyPriorConfig(embedding_dim=4, num_buckets=8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=3)
    return model, optimizer, scheduler


def step(model, optimizer, scheduler):
    x = torch.randn(5, 8)  # draws from the global RNG: resume must restore it
    loss = model.proj(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss


def test_resume_reproduces_uninterrupted_training(tmp_path):
    set_seed(0)
    model, optimizer, scheduler = make()
    for _ in range(3):
        step(model, optimizer, scheduler)
    save_checkpoint(tmp_path / "checkpoint", model, optimizer, scheduler, step=3, extra={"best": 1.5})
    for _ in range(4):
        step(model, optimizer, scheduler)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    set_seed(123)  # a different process state: everything must come from the checkpoint
    resumed, optimizer2, scheduler2 = make()
    state = load_checkpoint(tmp_path / "checkpoint", resumed, optimizer2, scheduler2)
    assert state["step"] == 3 and state["extra"] == {"best": 1.5}
    for _ in range(4):
        step(resumed, optimizer2, scheduler2)
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.old"))


def test_nan_loss_stops_with_message(tmp_path):
    with pytest.raises(TrainingDivergedError, match="last good checkpoint"):
        check_finite(torch.tensor(float("nan")), 7, tmp_path)


def test_jsonl_truncate(tmp_path):
    logger = JsonlLogger(tmp_path / "log.jsonl")
    for s in range(1, 6):
        logger.log({"step": s, "loss": 1.0 / s})
    logger.truncate_after(3)
    assert [r["step"] for r in logger.rows()] == [1, 2, 3]
    logger.log({"step": 4, "loss": 0.2})  # a resume logs the dropped steps again, once
    assert [r["step"] for r in logger.rows()] == [1, 2, 3, 4]


def test_jsonl_refuses_a_step_already_logged(tmp_path):
    logger = JsonlLogger(tmp_path / "log.jsonl")
    logger.log({"step": 1, "loss": 1.0})
    logger.log({"step": 2, "loss": 0.5})
    with pytest.raises(RuntimeError, match="step 2 is already logged"):
        JsonlLogger(tmp_path / "log.jsonl").log({"step": 2, "loss": 0.4})  # a new logger reads the file
    assert [r["step"] for r in logger.rows()] == [1, 2]


def test_decay_groups_spare_biases_norms_embeddings_and_frozen_weights():
    from evalkit.train.common import decay_groups

    model = torch.nn.ModuleDict(
        {
            "embedding": torch.nn.Embedding(4, 3),
            "proj": torch.nn.Linear(3, 3),
            "norm": torch.nn.LayerNorm(3),
            "frozen": torch.nn.Linear(3, 3),
        }
    )
    model["frozen"].weight.requires_grad_(False)
    decay, no_decay = decay_groups(model.named_parameters(), 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["params"] == [model["proj"].weight]
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "embedding.weight",
        "frozen.bias",
        "norm.bias",
        "norm.weight",
        "proj.bias",
    ]
