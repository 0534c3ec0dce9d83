"""``mlcp <pipeline> drift``: has the data moved since the live version was trained?

It compares the data the ``live`` version was trained on (its recorded ``mlcp.data.source``
and ``mlcp.data.digest``) with the given data, or the newest published version of the data
set (``--data newest``, steps/records/datasets.py), and says whether to retrain:

- the same digest: **no new data** (``no-new-data``), no retraining;
- another digest: each statistic the pipeline declares is computed with scipy and judged
  against its threshold. One beyond its threshold is **drift** (``drift``): the
  ``drift-detected`` alias is pointed at the live version (a recorded alias move) and the
  verdict is to retrain. None beyond: **new data without drift** (``new-data-no-drift``),
  which retrains only when the policy ``--retrain-on-new-data`` says so.

Every verdict is a decision run in ``<pipeline>/drift`` (``mlcp.kind=decision``, gate
``drift``): both data sets as inputs, every statistic, threshold and verdict, and
``drift.json``; the live version is tagged ``mlcp.gate.drift.verdict`` and ``.run_id``, so
``mlcp lineage MODEL@live`` shows the last one. The step writes the outputs ``retrain``
(true|false), ``reason`` (the verdict), ``data`` (the URI it compared, the one to train on)
and ``version`` (live). Exit 0 in all three cases; bad input (an unknown model, no live
version, unreadable data) exits 2 and moves nothing.

Core side: a pipeline brings its statistics as a :class:`DriftCheck` (its reader, its
lineage logger, its statistics); this module never imports a pipeline. scipy is imported
inside the functions that use it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..base import outputs
from ..base.errors import BadInput, RecordFailed
from ..decisions import gates
from ..records import datasets, lineage, tracking
from ..registry import aliases, describe, moves
from ..spec.contract import (
    DATA_DIGEST_TAG,
    DATA_SOURCE_TAG,
    DRIFT_DETECTED,
    GATE_TAG,
    KIND_TAG,
    LIVE,
    TAG_PREFIX,
    VERDICT_TAG,
    show_version,
)
from ..spec.declare import Config, option
from .stage import say

NAME = "drift"  # the stage: mlcp <pipeline> drift, experiment <pipeline>/drift
GATE = "drift"  # the decision's name: mlcp.gate.drift.verdict on the live version
NO_NEW_DATA = "no-new-data"
NEW_DATA = "new-data-no-drift"
DRIFT = "drift"
VERDICTS = (NO_NEW_DATA, NEW_DATA, DRIFT)
# outputs (steps/base/outputs.py writes them; workflows/specs.py declares them)
RETRAIN_OUTPUT = "retrain"
REASON_OUTPUT = "reason"
DATA_OUTPUT = "data"
REASON_TAG = TAG_PREFIX + "drift.reason"
RETRAIN_TAG = TAG_PREFIX + "drift.retrain"


@dataclass(kw_only=True)
class DriftConfig(Config):
    """What every pipeline's drift step takes; a pipeline adds its statistics' thresholds."""

    data: str = option(
        datasets.NEWEST,
        help="the data to compare with the live version's: a URI, or newest (the newest "
        "published version of the pipeline's data set)",
    )
    retrain_on_new_data: bool = option(
        False,
        help="policy: retrain on new data that did not drift too (false: only drift retrains)",
    )


@dataclass(frozen=True)
class Statistic:
    """One drift statistic and its verdict: drift when ``value`` is below (``op`` ``<``, a
    p-value) or above (``>``, an effect size) ``threshold``."""

    name: str  # e.g. label-chi2-p
    description: str  # what was compared, and how
    value: float
    threshold: float
    op: str  # "<" or ">": the side of the threshold that is drift
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.op not in ("<", ">"):
            raise ValueError(f"{self.name}: op must be < or >, got {self.op!r}")

    @property
    def drifted(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value < self.threshold if self.op == "<" else self.value > self.threshold

    def describe(self) -> str:
        side = "below" if self.op == "<" else "above"
        word = "drift" if self.drifted else "no drift"
        return f"{self.name}={self.value:.4g} ({word}: drift {side} {self.threshold:g})"


@dataclass(frozen=True)
class DriftCheck:
    """What a pipeline gives the drift step: its data set's name under the data root, a
    reader (URI -> the bytes read and the parsed data; BadInput when unreadable), a lineage
    logger (``log(read, parsed, context)``) and its statistics
    (``statistics(config, reference, new)``, each parsed)."""

    dataset: str  # e.g. cv/digits: where ``newest`` is looked up (steps/records/datasets.py)
    read: Callable[[str], tuple[lineage.DataRead, Any]]
    log: Callable[[lineage.DataRead, Any, str], str]
    statistics: Callable[[Any, Any, Any], Sequence[Statistic]]


# ------------------------------------------------------------------ statistics (scipy)


def chi_square(reference: Mapping[str, int], new: Mapping[str, int]) -> dict:
    """Chi-square test of homogeneity of two categorical distributions (counts by category):
    ``statistic``, ``p_value``, ``dof`` and both distributions as shares. A category seen in
    neither is left out; with fewer than two categories the distributions cannot differ."""
    from scipy.stats import chi2_contingency

    categories = sorted(c for c in set(reference) | set(new) if reference.get(c) or new.get(c))
    table = [
        [int(reference.get(c, 0)) for c in categories],
        [int(new.get(c, 0)) for c in categories],
    ]
    shares = {
        side: {c: row[i] / max(sum(row), 1) for i, c in enumerate(categories)}
        for side, row in zip(("reference", "new"), table, strict=True)
    }
    if len(categories) < 2 or not all(sum(row) for row in table):
        return {"statistic": 0.0, "p_value": 1.0, "dof": 0, "shares": shares}
    result = chi2_contingency(table)
    return {
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
        "dof": int(result.dof),
        "shares": shares,
    }


def ks(reference: Sequence[float], new: Sequence[float]) -> dict:
    """Two-sample Kolmogorov-Smirnov test: ``statistic`` (the largest gap between the two
    empirical distributions) and ``p_value``, with both means."""
    from scipy.stats import ks_2samp

    result = ks_2samp(list(reference), list(new))
    return {
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
        "reference_mean": float(sum(reference) / max(len(reference), 1)),
        "new_mean": float(sum(new) / max(len(new), 1)),
    }


def psi(reference: Sequence[float], new: Sequence[float], bins: int = 10) -> float:
    """Population stability index of ``new`` against ``reference``, over the reference's
    deciles (0.1: a moderate shift, 0.2: a large one, by the usual reading). scipy has no PSI
    by name; it is the symmetric relative entropy of the two binned shares, which
    ``scipy.special.rel_entr`` computes: only the binning is written here."""
    import numpy as np
    from scipy.special import rel_entr

    ref, cur = np.asarray(reference, dtype=float), np.asarray(new, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant reference: one bin, and what falls outside it
        edges = np.array([ref[0] - 0.5, ref[0] + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    eps = 1e-4
    ref_share = np.histogram(ref, edges)[0] / len(ref) + eps
    cur_share = np.histogram(cur, edges)[0] / len(cur) + eps
    return float(np.sum(rel_entr(cur_share, ref_share) + rel_entr(ref_share, cur_share)))


def categorical(
    name: str, what: str, reference: Mapping[str, int], new: Mapping[str, int], alpha: float
) -> Statistic:
    """``<name>-chi2-p``: the counts by category (``what``, e.g. the label distribution), a
    chi-square test of homogeneity; drift when its p-value is below ``alpha``."""
    test = chi_square(reference, new)
    description = f"{what}: chi-square test of homogeneity of the counts (p-value)"
    return Statistic(f"{name}-chi2-p", description, test["p_value"], alpha, "<", test)


def numeric(
    name: str,
    what: str,
    reference: Sequence[float],
    new: Sequence[float],
    alpha: float,
    *,
    max_psi: float | None = None,
    unit: str = "values",
) -> list[Statistic]:
    """``<name>-ks-p``: a numeric feature (``what``), a two-sample Kolmogorov-Smirnov test,
    drift when its p-value is below ``alpha``; and, with ``max_psi``, ``<name>-psi``: its
    population stability index over the reference's deciles, drift above ``max_psi`` (its
    details count the ``unit`` of each side)."""
    test = ks(reference, new)
    found = [
        Statistic(
            f"{name}-ks-p",
            f"{what}: two-sample Kolmogorov-Smirnov test (p-value)",
            test["p_value"],
            alpha,
            "<",
            test,
        )
    ]
    if max_psi is not None:
        found.append(
            Statistic(
                f"{name}-psi",
                f"{what}: population stability index over the reference deciles",
                psi(reference, new),
                max_psi,
                ">",
                {f"reference_{unit}": len(reference), f"new_{unit}": len(new)},
            )
        )
    return found


# ------------------------------------------------------------------ the step


def _live(client, model: str, pipeline: str) -> tuple[str, dict[str, str]]:
    registered = aliases.get_model(client, model)
    describe.check_owner(registered, pipeline)
    current = {a: str(v) for a, v in registered.aliases.items()}
    if LIVE not in current:
        raise BadInput(
            f"model {model!r} has no live version: nothing to compare new data with (put a "
            f"version live first, e.g. `mlcp {pipeline} chain --model-name {model}`)"
        )
    version = current[LIVE]
    tags = dict(aliases.get_version(client, model, version).tags)
    if not tags.get(DATA_SOURCE_TAG) or not tags.get(DATA_DIGEST_TAG):
        raise BadInput(
            f"{model} v{version} (live) records no training data ({DATA_SOURCE_TAG}, "
            f"{DATA_DIGEST_TAG}): it was not trained by an `mlcp {pipeline} train` stage"
        )
    return version, tags


def run(cfg: DriftConfig, pipeline: str, check: DriftCheck) -> dict:
    """Compare, record the decision, point ``drift-detected`` on drift; the summary."""
    report = say(pipeline, NAME)
    client = tracking.client()
    model = cfg.model_name
    live, tags = _live(client, model, pipeline)
    reference_uri, reference_digest = tags[DATA_SOURCE_TAG], tags[DATA_DIGEST_TAG]
    uri, pointer = datasets.resolve(cfg.data, check.dataset)
    new_read, new_data = check.read(uri)
    if pointer is not None and new_read.digest != pointer["digest"]:
        raise BadInput(
            f"the newest version of {check.dataset} ({pointer['uri']}) reads with digest "
            f"{new_read.digest}, its pointer names {pointer['digest']}: it changed after it "
            "was published"
        )
    report(
        f"live is {model} {show_version(live)}, trained on {reference_uri} "
        f"({reference_digest[:12]}); comparing {new_read.uri} ({new_read.digest[:12]})"
    )
    statistics: list[Statistic] = []
    reference_read = None
    if new_read.digest == reference_digest[: lineage.DIGEST_CHARS]:
        verdict = NO_NEW_DATA
    else:
        reference_read, reference_data = check.read(reference_uri)
        lineage.check_unchanged(reference_read, reference_digest, "the data live was trained on")
        statistics = list(check.statistics(cfg, reference_data, new_data))
        verdict = DRIFT if any(s.drifted for s in statistics) else NEW_DATA
    for statistic in statistics:
        report(statistic.describe())
    retrain = verdict == DRIFT or (verdict == NEW_DATA and cfg.retrain_on_new_data)
    why = {
        NO_NEW_DATA: "no new data: the same digest as the data live was trained on",
        NEW_DATA: "new data without drift: "
        + ("the policy retrains on new data" if cfg.retrain_on_new_data else "no retraining"),
        DRIFT: "drift: "
        + ", ".join(s.name for s in statistics if s.drifted)
        + " beyond the threshold",
    }[verdict]
    summary = {
        "model": model,
        "version": live,
        "verdict": verdict,
        "retrain": retrain,
        "why": why,
        "data": new_read.uri,
        "digest": new_read.digest,
        "reference": {"uri": reference_uri, "digest": reference_digest},
        "newest": pointer,
        "retrain_on_new_data": cfg.retrain_on_new_data,
        "statistics": [{**asdict(s), "drifted": s.drifted} for s in statistics],
    }
    summary["run_id"] = _record(
        cfg, pipeline, check, live, summary, statistics, new_read, new_data, reference_read
    )
    report(f"{verdict}: {why} (decision run {summary['run_id']})")
    if verdict == DRIFT:
        outcome = moves.assign(
            model,
            DRIFT_DETECTED,
            live,
            reason=f"{why} (drift decision run {summary['run_id']})",
            client=client,
        )
        summary["moves"] = [m.describe() for m in outcome.moves]
        report(f"{model}@{DRIFT_DETECTED} -> {show_version(live)}")
    outputs.write(
        {
            "version": live,
            RETRAIN_OUTPUT: "true" if retrain else "false",
            REASON_OUTPUT: verdict,
            DATA_OUTPUT: new_read.uri,
            "result.json": json.dumps(summary, default=str),
        }
    )
    return summary


def _record(
    cfg, pipeline, check, live, summary, statistics, new_read, new_data, reference_read
) -> str:
    """The decision run, then the live version's tags pointing at it (RecordFailed when
    either cannot be written: a drift step that cannot say why does not move an alias)."""
    import mlflow

    model = cfg.model_name
    params: dict[str, Any] = {
        "model": model,
        "live_version": live,
        "data": new_read.uri,
        "reference_data": summary["reference"]["uri"],
        "retrain_on_new_data": str(cfg.retrain_on_new_data).lower(),
    }
    for s in statistics:
        params[f"{s.name}.threshold"] = f"{s.threshold:g}"
        params[f"{s.name}.drift_when"] = f"value {s.op} threshold"
    name = f"drift-{model}-v{live}-{summary['verdict']}-data-{new_read.digest[:8]}"
    tags = {
        KIND_TAG: "decision",
        GATE_TAG: GATE,
        VERDICT_TAG: summary["verdict"],
        REASON_TAG: summary["why"][:500],
        RETRAIN_TAG: str(summary["retrain"]).lower(),
    }
    try:
        with tracking.stage_run(
            pipeline,
            NAME,
            model,
            name,
            version=live,
            params=params,
            tags=tags,
            system_metrics=False,
        ) as run:
            check.log(new_read, new_data, "drift")
            if reference_read is not None:  # the reference is only read when the data differs
                mlflow.set_tag(TAG_PREFIX + "data.reference.digest", reference_read.digest)
            metrics = {s.name: s.value for s in statistics if not math.isnan(s.value)}
            for s in statistics:
                for key, value in s.details.items():
                    if isinstance(value, int | float) and math.isfinite(value):
                        metrics[f"{s.name}.{key}"] = float(value)
            metrics["drifted"] = float(summary["verdict"] == DRIFT)
            mlflow.log_metrics(metrics)
            mlflow.log_text(json.dumps(summary, indent=2, default=str), "drift.json")
            run_id = run.info.run_id
        client = tracking.client()
        client.set_model_version_tag(model, live, gates.verdict_tag(GATE), summary["verdict"])
        client.set_model_version_tag(model, live, gates.run_id_tag(GATE), run_id)
    except BadInput:
        raise
    except Exception as exc:
        raise RecordFailed(f"could not record the drift decision for {model}: {exc}") from exc
    return run_id
