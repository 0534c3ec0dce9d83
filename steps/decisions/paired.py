"""Champion and challenger judged side by side, on the same inputs in the same run.

A challenger (the version a stage reads) is compared with the champion (the version the
champion alias names, ``live`` by default) measured at the same time, through the same
server: the CV test split through both Triton slots, the LLM eval prompts through both
adapters, one interleaved load on both slots. What it yields is a :class:`Comparison`, which
a gate declared ``against_champion`` judges and records (steps/decisions/gates.py): the versions
compared, the sample count, the test, the statistic with its interval, the p-value and the
margin.

Why paired: two accuracies measured on the same 270 test images differ in far fewer images
than two independent samples would, so the interval of their difference is much narrower
than each accuracy's own (BENCHMARKS.md has the widths from one run). A fixed threshold
against a number the champion recorded on another day measures the day as much as the
model.

The statistics are scipy's: McNemar's exact test is the binomial test of the discordant
pairs (``scipy.stats.binomtest``), the intervals are ``scipy.stats.bootstrap`` (BCa) over the
per-sample differences, or over the two samples of a latency or throughput ratio. Nothing
here is written by hand beyond counting. scipy and numpy are imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ..spec.contract import LIVE
from ..spec.declare import alias_name, option

CONFIDENCE = 0.95
RESAMPLES = 4999  # bootstrap resamples: the interval's ends move by ~0.1 point between seeds
SEED = 0  # the bootstrap is seeded: the same samples give the same interval

# What the decision run says the test was.
MCNEMAR = "McNemar exact (binomial on discordant pairs) + paired BCa bootstrap"
RATIO = "BCa bootstrap of the ratio (independent samples)"
PAIRED_RATIO = "BCa bootstrap of the ratio (paired per-second buckets)"


def champion_option() -> object:
    """The ``--champion-alias`` field every comparing stage declares."""
    return option(
        LIVE,
        help="alias naming the champion the version is compared with, side by side "
        "(unset alias: only the absolute gates apply)",
        parse=alias_name,
    )


@dataclass(frozen=True)
class Comparison:
    """One champion/challenger comparison, as recorded on the decision run that judges it.

    ``estimate`` is the statistic (a difference, challenger minus champion, or a ratio,
    challenger over champion) and ``ci_low``/``ci_high`` its interval; ``margin`` is what the
    gate allows; ``counts`` are the paired counts of a binary outcome (or the two sample
    sizes of a ratio).
    """

    statistic: str  # e.g. accuracy difference (challenger - champion)
    test: str
    estimate: float
    ci_low: float
    ci_high: float
    n: int
    challenger_version: str
    champion_version: str
    champion_alias: str
    margin: float
    p_value: float | None = None
    confidence: float = CONFIDENCE
    counts: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # per-side values, e.g. both accuracies

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One line for a person: what was compared, how, and what it showed."""
        p = "" if self.p_value is None else f", p={self.p_value:.3g}"
        number = "{:.4g}" if "ratio" in self.statistic else "{:+.4g}"  # a difference has a sign
        estimate, low, high = (number.format(v) for v in (self.estimate, self.ci_low, self.ci_high))
        return (
            f"v{self.challenger_version} vs {self.champion_alias} v{self.champion_version} "
            f"on {self.n} samples: {self.statistic} {estimate}, "
            f"{self.confidence:.0%} CI [{low}, {high}]{p} ({self.test}; margin {self.margin:g})"
        )

    def params(self) -> dict[str, str]:
        """The text fields, as the decision run's params."""
        return {
            "test": self.test,
            "statistic": self.statistic,
            "challenger_version": self.challenger_version,
            "champion_version": self.champion_version,
            "champion_alias": self.champion_alias,
            "confidence": f"{self.confidence:g}",
            "margin": f"{self.margin:g}",
        }

    def metrics(self) -> dict[str, float]:
        """The numbers, as the decision run's metrics."""
        found = {
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": float(self.n),
        }
        if self.p_value is not None:
            found["p_value"] = self.p_value
        found.update({f"count_{k}": float(v) for k, v in self.counts.items()})
        found.update({k: float(v) for k, v in self.extra.items()})
        return {k: v for k, v in found.items() if math.isfinite(v)}


def _interval(samples: tuple, statistic, *, paired: bool, confidence: float) -> tuple[float, float]:
    """scipy's BCa bootstrap interval; a degenerate sample (every resample gives the same
    value, e.g. two identical models) has the point itself as its interval."""
    import warnings

    import numpy as np
    from scipy import stats

    point = float(statistic(*samples, axis=-1))
    if all(np.ptp(np.asarray(s)) == 0 for s in samples) or (
        paired and np.ptp(np.asarray(samples[0]) - np.asarray(samples[-1])) == 0
    ):
        return point, point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns, and answers NaN, on a degenerate jackknife
        for method in ("BCa", "percentile"):  # percentile when BCa cannot be computed
            result = stats.bootstrap(
                samples,
                statistic,
                n_resamples=RESAMPLES,
                paired=paired,
                vectorized=True,
                confidence_level=confidence,
                method=method,
                rng=np.random.default_rng(SEED),
            )
            low, high = result.confidence_interval
            if math.isfinite(low) and math.isfinite(high):
                break
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = _defined_percentiles(result.bootstrap_distribution, confidence)
    return float(low), float(high)


def _defined_percentiles(distribution, confidence: float) -> tuple[float, float]:
    """The percentile interval of the resamples whose statistic is defined. A ratio has no
    value in a resample that drew only the champion's empty buckets (a loaded server streams
    in bursts, leaving seconds with no token): scipy then answers inf or NaN for the whole
    interval and has no option to leave such resamples out, so this does, when at least half
    of them are defined (NaN otherwise: not measured)."""
    import numpy as np

    values = np.asarray(distribution, dtype=float)
    defined = values[np.isfinite(values)]
    if defined.size < max(2, values.size // 2):
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.percentile(defined, [100 * tail, 100 * (1 - tail)])
    return float(low), float(high)


def _mean_difference(a, b, axis=-1):
    import numpy as np

    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def binary(
    challenger: Sequence[bool],
    champion: Sequence[bool],
    *,
    name: str,
    challenger_version: str,
    champion_version: str,
    champion_alias: str,
    margin: float,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Per-sample outcomes (right or wrong) of both versions on the same samples: the paired
    counts, McNemar's exact p-value, and the interval of the rate difference from a paired
    bootstrap. ``name`` is the rate's name (``accuracy``, ``correct_rate``)."""
    import numpy as np
    from scipy import stats

    a = np.asarray(challenger, dtype=bool)
    b = np.asarray(champion, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(
            f"paired outcomes need two equally long, non-empty sequences, got {a.shape} "
            f"and {b.shape}"
        )
    counts = {
        "both_right": int(np.sum(a & b)),
        "only_challenger": int(np.sum(a & ~b)),
        "only_champion": int(np.sum(~a & b)),
        "both_wrong": int(np.sum(~a & ~b)),
    }
    discordant = counts["only_challenger"] + counts["only_champion"]
    p_value = (
        float(stats.binomtest(counts["only_challenger"], discordant, 0.5).pvalue)
        if discordant
        else 1.0
    )
    x, y = a.astype(float), b.astype(float)
    low, high = _interval((x, y), _mean_difference, paired=True, confidence=confidence)
    return Comparison(
        statistic=f"{name} difference (challenger - champion)",
        test=MCNEMAR,
        estimate=float(x.mean() - y.mean()),
        ci_low=low,
        ci_high=high,
        n=int(len(a)),
        challenger_version=str(challenger_version),
        champion_version=str(champion_version),
        champion_alias=champion_alias,
        margin=margin,
        p_value=p_value,
        confidence=confidence,
        counts=counts,
        extra={f"challenger_{name}": float(x.mean()), f"champion_{name}": float(y.mean())},
    )


def unpaired_interval(
    challenger: Sequence[bool], champion: Sequence[bool], confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The interval of the same rate difference had the two samples been independent (what
    comparing with a number recorded on another sample amounts to): for BENCHMARKS.md."""
    import numpy as np

    x = np.asarray(challenger, dtype=float)
    y = np.asarray(champion, dtype=float)
    return _interval((x, y), _mean_difference, paired=False, confidence=confidence)


def _p95_ratio(a, b, axis=-1):
    import numpy as np

    return np.percentile(a, 95, axis=axis) / np.percentile(b, 95, axis=axis)


def _mean_ratio(a, b, axis=-1):
    import numpy as np

    return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def ratio(
    challenger: Sequence[float],
    champion: Sequence[float],
    *,
    statistic: str,
    challenger_version: str,
    champion_version: str,
    champion_alias: str,
    margin: float,
    paired: bool = False,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """The challenger/champion ratio of a statistic with its bootstrap interval.

    ``statistic`` is ``p95`` (of per-request latencies, the two samples independent) or
    ``mean`` (e.g. of requests per second in the same one-second buckets: ``paired=True``).
    ``margin`` is the ratio the gate tolerates (e.g. 1.5 for latency, 0.67 for throughput).
    """
    import numpy as np

    functions = {"p95": _p95_ratio, "mean": _mean_ratio}
    if statistic not in functions:
        raise ValueError(f"unknown ratio statistic {statistic!r}; choose one of p95, mean")
    a = np.asarray(challenger, dtype=float)
    b = np.asarray(champion, dtype=float)
    if len(a) < 2 or len(b) < 2 or (paired and a.shape != b.shape):
        raise ValueError(
            f"a ratio needs at least two samples on each side (and equal lengths when "
            f"paired), got {len(a)} and {len(b)}"
        )
    function = functions[statistic]
    if not float(np.percentile(b, 95) if statistic == "p95" else b.mean()) > 0:
        raise ValueError(f"the champion's {statistic} is not positive: no ratio")
    low, high = _interval((a, b), function, paired=paired, confidence=confidence)
    return Comparison(
        statistic=f"{statistic} ratio (challenger / champion)",
        test=PAIRED_RATIO if paired else RATIO,
        estimate=float(function(a, b, axis=-1)),
        ci_low=low,
        ci_high=high,
        n=int(len(a) + len(b)) if not paired else int(len(a)),
        challenger_version=str(challenger_version),
        champion_version=str(champion_version),
        champion_alias=champion_alias,
        margin=margin,
        confidence=confidence,
        counts={"challenger": int(len(a)), "champion": int(len(b))},
    )
