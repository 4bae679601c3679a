"""B-VQA arithmetic against naive reference loops (random inputs, both modes) and hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from evalkit.scorers import bvqa


# --------------------------------------------------------------------------- references


def reference_full(probs):
    """Naive float64 loops: product per image, mean over images."""
    scores = []
    for row in probs:
        product = 1.0
        for p in row:
            product *= float(p)
        scores.append(product)
    return scores, sum(scores) / len(scores)


def reference_t2i_compbench(probs, np_num=8):
    """T2I-CompBench's BLIPvqa_eval arithmetic, step by step: BLIP's float32 probability formatted
    '{:.4f}', read into a float32 reward tensor (an empty slot = 1), float32 product over the
    slots, the product formatted '{:.4f}', plain sequential mean of the formatted values."""
    n = len(probs)
    reward = torch.zeros((n, np_num))
    for i in range(np_num):
        for k in range(n):
            if len(probs[k]) > i:
                answer = "{:.4f}".format(torch.tensor(float(probs[k][i]), dtype=torch.float32))
                reward[k][i] = float(answer)
            else:
                reward[k][i] = 1
    reward_final = reward[:, 0]
    for i in range(1, np_num):
        reward_final *= reward[:, i]
    scores, total = [], 0
    for k in range(n):
        value = float("{:.4f}".format(reward_final[k].item()))
        scores.append(value)
        total += value
    return scores, total / n


def random_probs(rng, n_images, max_questions=11):
    """Ragged probabilities, with some values right at 4-decimal rounding boundaries and at 0 / 1."""
    rows = []
    for _ in range(n_images):
        k = int(rng.integers(0, max_questions + 1))
        row = rng.random(k)
        tricky = rng.random(k) < 0.2
        row[tricky] = np.clip(
            rng.integers(0, 10000, tricky.sum()) / 1e4 + 5e-5 + rng.choice([-1e-9, 0.0, 1e-9], tricky.sum()), 0.0, 1.0
        )
        row[rng.random(k) < 0.05] = 1.0
        row[rng.random(k) < 0.05] = 0.0
        rows.append(row.tolist())
    return rows


# --------------------------------------------------------------------------- against the references


@pytest.mark.parametrize("n_images", [1, 5, 40, 300])
@pytest.mark.parametrize("seed", [0, 1])
def test_full_mode_matches_naive_loop(n_images, seed):
    probs = random_probs(np.random.default_rng(seed), n_images)
    scores, mean = reference_full(probs)
    result = bvqa.aggregate(probs)
    np.testing.assert_allclose(result.image_scores, scores, rtol=1e-12, atol=0)
    assert result.score == pytest.approx(mean, rel=1e-12)
    assert bvqa.category_score(probs) == pytest.approx(mean, rel=1e-12)
    assert result.mode == "full" and result.n_images == n_images and result.truncated == 0


@pytest.mark.parametrize("n_images", [1, 5, 40, 300])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_t2i_compbench_mode_reproduces_the_original_exactly(n_images, seed):
    probs = random_probs(np.random.default_rng(100 + seed), n_images)
    scores, mean = reference_t2i_compbench(probs)
    result = bvqa.aggregate(probs, mode="t2i-compbench")
    assert result.image_scores.tolist() == scores  # bit-identical, not approximately
    assert result.score == mean
    assert result.truncated == sum(len(row) > 8 for row in probs)


@pytest.mark.parametrize("np_num", [1, 3, 8])
def test_t2i_compbench_slot_count(np_num):
    probs = random_probs(np.random.default_rng(7), 25)
    scores, mean = reference_t2i_compbench(probs, np_num=np_num)
    assert bvqa.image_scores(probs, "t2i-compbench", max_slots=np_num).tolist() == scores
    assert bvqa.category_score(probs, "t2i-compbench", max_slots=np_num) == mean


def test_input_containers_agree():
    rng = np.random.default_rng(3)
    grid = rng.random((12, 2))
    expected = bvqa.image_scores(grid.tolist())
    for probs in (grid, torch.from_numpy(grid), [torch.from_numpy(r) for r in grid], [tuple(r) for r in grid]):
        for mode in bvqa.MODES:
            np.testing.assert_array_equal(bvqa.image_scores(probs, mode), bvqa.image_scores(grid.tolist(), mode))
    np.testing.assert_allclose(expected, grid.prod(1), rtol=1e-15)


# --------------------------------------------------------------------------- hand-computed


def test_hand_computed_exact_decimals():
    probs = [[0.5, 0.5], [1.0], [0.2, 0.5, 0.5]]
    for mode in bvqa.MODES:
        result = bvqa.aggregate(probs, mode)
        np.testing.assert_allclose(result.image_scores, [0.25, 1.0, 0.05], rtol=1e-12)
        assert result.score == pytest.approx(1.3 / 3, rel=1e-12)


def test_hand_computed_rounding():
    # 0.3333 * 0.6667 = 0.22221111 -> 0.2222, while the full product is 0.2222177778
    assert bvqa.image_scores([[0.33333, 0.66666]], "t2i-compbench")[0] == 0.2222
    assert bvqa.image_scores([[0.33333, 0.66666]])[0] == pytest.approx(0.33333 * 0.66666, rel=1e-15)
    # a tiny answer rounds to 0.0000 and zeroes the image in the original
    assert bvqa.image_scores([[0.00004, 0.9]], "t2i-compbench")[0] == 0.0
    assert bvqa.image_scores([[0.00004, 0.9]])[0] == pytest.approx(3.6e-5, rel=1e-12)
    # float32(5e-5) = 4.99999987e-05 prints as 0.0000 (BLIP's probabilities are float32)
    assert bvqa.t2i_compbench_question_value(5e-5) == 0.0
    assert bvqa.t2i_compbench_question_value(0.12345) == np.float32(0.1235)
    assert bvqa.format4(0.98765) == 0.9877


@pytest.mark.parametrize(
    "pair, expected",
    [
        ((0.0036, 0.875), 0.0032),  # exact product 0.00315: the float32 product rounds up, a float64 one down
        ((0.012, 0.6875), 0.0082),  # 0.00825: float32 rounds down, float64 up
        ((0.019, 0.95), 0.0181),
    ],
)
def test_hand_computed_float32_product(pair, expected):
    assert bvqa.image_scores([list(pair)], "t2i-compbench")[0] == expected
    assert reference_t2i_compbench([list(pair)])[0][0] == expected


def test_hand_computed_slots():
    nine = [[0.5] * 9]
    assert bvqa.image_scores(nine)[0] == 0.5**9  # full: every question counts
    assert bvqa.image_scores(nine, "t2i-compbench")[0] == 0.0039  # 8 slots: 0.5**8 = 0.00390625
    assert bvqa.aggregate(nine, "t2i-compbench").truncated == 1
    assert bvqa.image_scores([[]], "t2i-compbench")[0] == 1.0  # every slot empty
    assert bvqa.image_scores([[]])[0] == 1.0


def test_mean_modes():
    values = [0.1] * 10
    assert bvqa.mean_score(values, "full") == pytest.approx(0.1, abs=0)  # fsum: exactly 0.1
    naive = 0.0
    for v in values:
        naive += v
    assert bvqa.mean_score(values, "t2i-compbench") == naive / 10
    assert math.isnan(bvqa.mean_score([]))


# --------------------------------------------------------------------------- per question


def test_yes_probability():
    assert bvqa.yes_probability(0.6, 0.2) == pytest.approx(0.75)
    assert bvqa.yes_probability(0.0, 0.0) == 0.5
    np.testing.assert_allclose(
        bvqa.yes_probability(np.array([0.6, 0.0, 0.1]), np.array([0.2, 0.0, 0.3])), [0.75, 0.5, 0.25]
    )
    t = bvqa.yes_probability(torch.tensor([0.6, 0.0]), torch.tensor([0.2, 0.0]))
    assert torch.is_tensor(t)
    torch.testing.assert_close(t, torch.tensor([0.75, 0.5]))


def test_yes_probability_from_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (6, 20))
    yes, no = 3, 11
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    expected = soft[:, yes] / (soft[:, yes] + soft[:, no])
    np.testing.assert_allclose(bvqa.yes_probability_from_logits(logits, yes, no), expected, rtol=1e-12)
    np.testing.assert_allclose(
        bvqa.yes_probability_from_logits(logits, yes, no, mode="t2i-compbench"), expected, rtol=1e-5
    )
    as_torch = bvqa.yes_probability_from_logits(torch.from_numpy(logits), yes, no)
    np.testing.assert_allclose(as_torch.numpy(), expected, rtol=1e-12)
    as_torch32 = bvqa.yes_probability_from_logits(torch.from_numpy(logits).float(), yes, no, mode="t2i-compbench")
    assert as_torch32.dtype == torch.float32
    np.testing.assert_allclose(as_torch32.numpy(), expected, rtol=1e-5)
    extreme = np.array([[0.0, 800.0, -800.0], [0.0, -800.0, 800.0]])
    np.testing.assert_array_equal(bvqa.yes_probability_from_logits(extreme, 1, 2), [1.0, 0.0])


# --------------------------------------------------------------------------- rows and errors


def test_category_scores_from_rows():
    rows = [
        {"category": "color", "questions": [{"question": "a?", "p": 0.5}, {"question": "b?", "p": 0.4}]},
        {"category": "color", "questions": [{"question": "a?", "p": 1.0}]},
        {"category": "shape", "questions": [{"question": "a?", "p": 0.123456}]},
    ]
    assert bvqa.category_scores_from_rows(rows) == pytest.approx({"color": 0.6, "shape": 0.123456})
    assert bvqa.category_scores_from_rows(rows, "t2i-compbench") == {"color": 0.6, "shape": 0.1235}


def test_errors():
    with pytest.raises(ValueError, match="mode"):
        bvqa.image_scores([[0.5]], mode="rounded")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bvqa.image_scores([[0.5, 1.5]])
    with pytest.raises(ValueError, match="grouped per image"):
        bvqa.image_scores([0.5, 0.25])
    with pytest.raises(ValueError, match="grouped per image"):
        bvqa.image_scores(np.array([0.5, 0.25]))
