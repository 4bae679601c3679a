import numpy as np
import pytest

from evalkit.stats import bootstrap, paired_bootstrap


def test_bootstrap_covers_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = bootstrap(rng.normal(0.5, 0.1, 50))
    large = bootstrap(rng.normal(0.5, 0.1, 5000))
    assert small.ci_low < 0.5 < small.ci_high
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low) / 5


def test_clustered_bootstrap_is_wider_for_correlated_items():
    rng = np.random.default_rng(1)
    prompt_effect = np.repeat(rng.normal(0, 1, 30), 10)  # 30 prompts × 10 seeds, seeds share the prompt's effect
    values = prompt_effect + rng.normal(0, 0.1, 300)
    clusters = np.repeat(np.arange(30), 10)
    naive, clustered = bootstrap(values), bootstrap(values, clusters)
    assert clustered.n_clusters == 30 and clustered.n == 300
    assert clustered.stderr > 2 * naive.stderr
    assert clustered.value == pytest.approx(values.mean())


def test_paired_detects_real_difference_and_not_noise():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, 400)
    better = base + 0.2 + rng.normal(0, 0.05, 400)
    same = base + rng.normal(0, 0.05, 400)
    assert paired_bootstrap(base, better).p_value < 0.01
    result = paired_bootstrap(base, same)
    assert result.ci_low < 0 < result.ci_high and result.p_value > 0.05
    with pytest.raises(ValueError):
        paired_bootstrap(base, better[:10])
