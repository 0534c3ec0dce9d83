"""``mlcp tabular drift``: reads ``live`` (the table its version was trained on) and the
newest (or given) table; writes ``drift-detected`` (at the live version) when it moved.

Statistics, over every row of each table: ``label-chi2-p`` (the class counts, chi-square;
drift below ``--label-alpha``) and, per feature, ``<feature>-ks-p`` (two-sample
Kolmogorov-Smirnov; drift below ``--feature-alpha``, Bonferroni-corrected over the
features). The step itself is ``mlcp.drift``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlcp import Stage, drift, option

from . import PIPELINE
from . import data as tabdata


@dataclass(kw_only=True)
class TabularDriftConfig(drift.DriftConfig):
    label_alpha: float = option(
        0.01,
        help="drift when the chi-square test of the class counts has a p-value below this",
        above=0,
        below=1,
    )
    feature_alpha: float = option(
        0.01,
        help="drift when a feature's Kolmogorov-Smirnov test has a p-value below this divided "
        "by the number of features",
        above=0,
        below=1,
    )


def statistics(cfg: TabularDriftConfig, reference: tabdata.Table, new: tabdata.Table) -> list:
    def counts(table):
        return {str(k): int(v) for k, v in table.frame[tabdata.LABEL].value_counts().items()}

    alpha = cfg.feature_alpha / len(reference.features)  # Bonferroni over the features
    return [
        drift.categorical("label", "class counts", counts(reference), counts(new), cfg.label_alpha),
        *(
            test
            for feature in reference.features
            if feature in new.frame.columns
            for test in drift.numeric(
                feature,
                feature,
                reference.frame[feature].tolist(),
                new.frame[feature].tolist(),
                alpha,
            )
        ),
    ]


CHECK = drift.DriftCheck(
    dataset=tabdata.DATASET, read=tabdata.read, log=tabdata.log, statistics=statistics
)


def run(cfg: TabularDriftConfig) -> dict:
    return drift.run(cfg, PIPELINE, CHECK)


STAGE = Stage(
    PIPELINE,
    drift.NAME,
    "compare the newest table with the live version's; drift-detected, retrain=true when it moved",
    TabularDriftConfig,
    run,
    title="Tabular: drift (new rows? moved?)",
    description=(
        "Compares the table the live version was trained on with the newest published one: "
        "no new data, new data without drift, or drift (class chi-square, per-feature KS). "
        "Records the decision; on drift points drift-detected at the live version. Outputs "
        "retrain=true|false and the data to train on."
    ),
)
