"""The champion/challenger statistics (steps.decisions.paired): counts, McNemar's exact test and the
bootstrap intervals, on samples whose answer is known. No server: pure computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steps.decisions import paired

SIDES = {"challenger_version": "2", "champion_version": "1", "champion_alias": "live"}


def outcomes(n: int, right: set[int]) -> list[bool]:
    return [i in right for i in range(n)]


def test_binary_counts_the_pairs_and_tests_the_discordant_ones():
    n = 270
    champion = outcomes(n, set(range(0, 260)))  # right on 260
    challenger = outcomes(n, set(range(19, 260)) | {265})  # loses 19, gains 1
    found = paired.binary(challenger, champion, name="accuracy", margin=0.02, **SIDES)
    assert found.counts == {
        "both_right": 241,
        "only_challenger": 1,
        "only_champion": 19,
        "both_wrong": 9,
    }
    assert found.n == n
    assert found.estimate == pytest.approx((242 - 260) / n)
    # McNemar's exact test: 1 of 20 discordant pairs under Binomial(20, 1/2), two-sided
    assert found.p_value == pytest.approx(2 * 21 / 2**20)
    assert found.ci_low < found.estimate < found.ci_high < 0  # significantly worse
    assert found.extra == {
        "challenger_accuracy": pytest.approx(242 / n),
        "champion_accuracy": pytest.approx(260 / n),
    }
    metrics = found.metrics()
    assert metrics["count_only_champion"] == 19 and metrics["p_value"] == found.p_value
    assert found.params()["test"] == paired.MCNEMAR


def test_identical_outcomes_have_a_zero_width_interval_and_p_one():
    same = outcomes(60, set(range(40)))
    found = paired.binary(same, same, name="correct_rate", margin=0.1, **SIDES)
    assert (found.estimate, found.ci_low, found.ci_high, found.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_the_interval_is_seeded_and_contains_a_small_true_difference():
    champion = outcomes(270, set(range(250)))
    challenger = outcomes(270, set(range(4, 254)))  # loses 4 images, gains 4 others
    first = paired.binary(challenger, champion, name="accuracy", margin=0.02, **SIDES)
    again = paired.binary(challenger, champion, name="accuracy", margin=0.02, **SIDES)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert first.ci_low <= first.estimate <= first.ci_high
    assert first.p_value == 1.0 and first.ci_low < 0 < first.ci_high


def test_pairing_narrows_the_interval_of_correlated_outcomes():
    rng = np.random.default_rng(3)
    champion = rng.random(270) < 0.9
    challenger = champion.copy()
    flip = rng.choice(270, 10, replace=False)
    challenger[flip] = ~challenger[flip]
    found = paired.binary(challenger, champion, name="accuracy", margin=0.02, **SIDES)
    low, high = paired.unpaired_interval(challenger, champion)
    assert low <= found.estimate <= high
    assert (found.ci_high - found.ci_low) < 0.6 * (high - low)


@pytest.mark.parametrize(
    "challenger, champion",
    [([True, False], [True]), ([], []), ([[True]], [[True]])],
)
def test_binary_refuses_unpaired_samples(challenger, champion):
    with pytest.raises(ValueError, match="equally long"):
        paired.binary(challenger, champion, name="accuracy", margin=0.02, **SIDES)


def test_ratio_of_p95_sees_a_slower_challenger():
    rng = np.random.default_rng(1)
    champion = rng.gamma(4.0, 2.0, 2000)  # ms
    slower = paired.ratio(champion[:1800] * 4.0, champion, statistic="p95", margin=1.5, **SIDES)
    assert slower.estimate == pytest.approx(4.0, rel=0.1)
    assert slower.ci_low > 1.5  # the whole interval is beyond the tolerance
    assert slower.counts == {"challenger": 1800, "champion": 2000}
    assert slower.test == paired.RATIO
    same = paired.ratio(rng.gamma(4.0, 2.0, 2000), champion, statistic="p95", margin=1.5, **SIDES)
    assert same.ci_low < 1.0 < same.ci_high


def test_ratio_of_paired_means():
    rng = np.random.default_rng(2)
    champion = rng.poisson(200, 12).astype(float)  # requests in each second
    found = paired.ratio(
        champion * 0.5, champion, statistic="mean", paired=True, margin=0.67, **SIDES
    )
    assert found.estimate == pytest.approx(0.5)
    assert found.ci_low == pytest.approx(0.5) and found.ci_high == pytest.approx(0.5)
    assert found.test == paired.PAIRED_RATIO and found.n == 12


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"statistic": "median"}, "unknown ratio statistic"),
        ({"statistic": "p95", "champion": [1.0]}, "at least two samples"),
        ({"statistic": "mean", "paired": True, "champion": [1.0, 2.0]}, "equal lengths"),
        ({"statistic": "mean", "champion": [0.0, 0.0, 0.0]}, "not positive"),
    ],
)
def test_ratio_refuses_what_has_no_ratio(kwargs, message):
    args = {"challenger": [1.0, 2.0, 3.0], "champion": [1.0, 2.0, 3.0], **kwargs}
    with pytest.raises(ValueError, match=message):
        paired.ratio(margin=1.5, **SIDES, **args)


def test_line_says_what_was_compared():
    found = paired.binary(
        outcomes(10, set(range(9))),
        outcomes(10, set(range(10))),
        name="accuracy",
        margin=0.02,
        **SIDES,
    )
    line = found.line()
    assert line.startswith("v2 vs live v1 on 10 samples: accuracy difference")
    assert "95% CI [" in line and "p=1" in line and "margin 0.02" in line
    assert all(math.isfinite(v) for v in found.metrics().values())


def test_a_ratio_of_bursty_buckets_leaves_out_the_resamples_with_no_champion_traffic():
    def tokens_ratio(challenger, champion):
        return paired.ratio(
            challenger,
            champion,
            statistic="mean",
            challenger_version="2",
            champion_version="1",
            champion_alias="live",
            margin=0.67,
            paired=True,
        )

    # given per-second token counts of a loaded server that streams in bursts: most seconds
    # of the champion are empty, so some resamples draw no champion token at all
    found = tokens_ratio([0, 10, 0, 16, 0, 16, 0], [0, 0, 0, 16, 0, 0, 16])
    # then the interval is that of the resamples where the ratio is defined, around the point
    assert math.isfinite(found.ci_low) and math.isfinite(found.ci_high)
    assert found.estimate == pytest.approx(42 / 32)
    assert 0 <= found.ci_low <= found.estimate <= found.ci_high
    # and with a single second of tokens on each side, still an interval around the point
    sparse = tokens_ratio([0, 0, 0, 0, 0, 0, 16], [0, 0, 0, 0, 0, 16, 0])
    assert math.isfinite(sparse.ci_low) and math.isfinite(sparse.ci_high)
    assert sparse.ci_low <= sparse.estimate == 1.0 <= sparse.ci_high
