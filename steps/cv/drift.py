"""cv drift: reads ``live`` (the data its version was trained on) and the newest (or given) image
set, and writes ``drift-detected`` (at the live version) when the images moved.

The CV pipeline's drift statistics, over every image of each set (all splits: the data set as
published):

- ``label-chi2-p``: the label distribution, a chi-square test of homogeneity of the class
  counts; drift when its p-value is below ``--label-alpha``;
- ``intensity-ks-p``: the per-image mean intensity (0-1), a two-sample Kolmogorov-Smirnov
  test; drift when its p-value is below ``--intensity-alpha``;
- ``intensity-psi``: the population stability index of that intensity over the reference's
  deciles; drift when it is above ``--max-intensity-psi``.

The step itself (compare digests, record the decision, move the alias, write ``retrain``) is
the core's :mod:`steps.stages.drift`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec.declare import Stage, option
from ..stages import drift
from . import PIPELINE, data


@dataclass(kw_only=True)
class CvDriftConfig(drift.DriftConfig):
    label_alpha: float = option(
        0.01,
        help="drift when the chi-square test of the label distribution has a p-value below this",
        above=0,
        below=1,
    )
    intensity_alpha: float = option(
        0.01,
        help="drift when the Kolmogorov-Smirnov test of the per-image mean intensity has a "
        "p-value below this",
        above=0,
        below=1,
    )
    max_intensity_psi: float = option(
        0.2,
        help="drift when the population stability index of the per-image mean intensity is "
        "above this",
        min=0,
    )


def labels(images: data.ImageSet) -> dict[str, int]:
    """How many images of each class the set holds, by class name."""
    import numpy as np

    counts: dict[str, int] = {}
    for split in data.SPLITS:
        found = np.bincount(images.labels[split], minlength=len(images.classes))
        for name, count in zip(images.classes, found, strict=True):
            counts[name] = counts.get(name, 0) + int(count)
    return counts


def intensities(images: data.ImageSet) -> list[float]:
    """Each image's mean intensity, 0 (black) to 1 (white)."""
    found: list[float] = []
    for split in data.SPLITS:
        x = images.images[split]
        found += (x.reshape(len(x), -1).mean(axis=1) / 255.0).tolist()
    return found


def statistics(
    cfg: CvDriftConfig, reference: data.ImageSet, new: data.ImageSet
) -> list[drift.Statistic]:
    return [
        drift.categorical(
            "label", "label distribution", labels(reference), labels(new), cfg.label_alpha
        ),
        *drift.numeric(
            "intensity",
            "per-image mean intensity",
            intensities(reference),
            intensities(new),
            cfg.intensity_alpha,
            max_psi=cfg.max_intensity_psi,
            unit="images",
        ),
    ]


CHECK = drift.DriftCheck(
    dataset=data.DATASET,
    read=lambda uri: data.read(uri),
    log=lambda read, images, context: data.log(read, images, context),
    statistics=statistics,
)


def run(cfg: CvDriftConfig) -> dict:
    return drift.run(cfg, PIPELINE, CHECK)


STAGE = Stage(
    PIPELINE,
    drift.NAME,
    "compare the newest image set with the live version's; drift-detected and retrain=true "
    "when it moved",
    CvDriftConfig,
    run,
    title="CV: drift (new images? moved?)",
    description=(
        "Compares the data the live version was trained on with the newest published image "
        "set (or data): no new data, new data without drift, or drift (label chi-square, "
        "intensity KS and PSI). Records the decision; on drift points drift-detected at the "
        "live version. Outputs retrain=true|false and the data to train on."
    ),
)
