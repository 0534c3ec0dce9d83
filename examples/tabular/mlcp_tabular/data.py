"""The tabular data set: scikit-learn's wine recognition table (178 rows, 13 measurements,
3 cultivars; shipped with scikit-learn, nothing is downloaded), as one CSV with a ``label``
and a ``split`` column (train/val/test, 70/15/15, seeded).

``mlcp data tabular`` publishes it as a version of ``tabular/wine`` under
``$MLCP_DATA_ROOT`` and points ``newest`` at it. The same variant and seed give the same
bytes. A variant (:data:`VARIANTS`) is the world moved, for drift.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from mlcp import BadInput, DataRead, datasets, lineage, say

DATASET = "tabular/wine"
FILE = "wine.csv"
LABEL, SPLIT = "label", "split"
SPLITS = ("train", "val", "test")
VARIANTS = {
    datasets.BASE_VARIANT: "the table as it is",
    "shifted": "every alcohol reading +1.5 and proline x1.4 (a recalibrated instrument)",
    "imbalanced": "a changed class balance: class 0 keeps one row in five",
}


@dataclass
class Table:
    frame: object  # pandas DataFrame: the features, LABEL and SPLIT
    features: list[str]

    def part(self, split: str):
        rows = self.frame[self.frame[SPLIT] == split]
        return rows[self.features], rows[LABEL].to_numpy()


def build(seed: int = 0, variant: str = datasets.BASE_VARIANT) -> bytes:
    import numpy as np
    from sklearn.datasets import load_wine

    if variant not in VARIANTS:
        raise BadInput(
            f"unknown tabular data variant {variant!r}; choose one of {', '.join(VARIANTS)}"
        )
    frame = load_wine(as_frame=True).frame.rename(columns={"target": LABEL})
    frame.columns = [c.replace("/", "_") for c in frame.columns]
    rng = np.random.default_rng([seed, 1])
    if variant == "shifted":
        frame["alcohol"] += 1.5
        frame["proline"] *= 1.4
    if variant == "imbalanced":
        frame = frame[(frame[LABEL] != 0) | (rng.random(len(frame)) < 0.2)]
    order = np.random.default_rng(seed).permutation(len(frame))
    n_train, n_val = int(len(order) * 0.7), int(len(order) * 0.15)
    split = np.empty(len(frame), dtype=object)
    split[order[:n_train]] = "train"
    split[order[n_train : n_train + n_val]] = "val"
    split[order[n_train + n_val :]] = "test"
    frame = frame.assign(**{SPLIT: split}).reset_index(drop=True)
    return frame.to_csv(index=False, float_format="%.6g").encode()


def parse(read: DataRead) -> Table:
    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(read.data))
    except Exception as exc:
        raise BadInput(f"{read.uri} is not a readable CSV table: {exc}") from None
    missing = [c for c in (LABEL, SPLIT) if c not in frame.columns]
    if missing:
        raise BadInput(f"{read.uri} lacks the column(s) {', '.join(missing)}")
    features = [c for c in frame.columns if c not in (LABEL, SPLIT)]
    if not features or not all(pd.api.types.is_numeric_dtype(frame[c]) for c in features):
        raise BadInput(f"{read.uri}: every feature column must be numeric")
    frame[features] = frame[features].astype("float64")  # what the V2 requests send: FP64
    absent = [s for s in SPLITS if not (frame[SPLIT] == s).any()]
    if absent:
        raise BadInput(f"{read.uri} has no {', '.join(absent)} rows")
    return Table(frame, features)


def read(uri: str) -> tuple[DataRead, Table]:
    found = lineage.read(uri)
    return found, parse(found)


def log(read: DataRead, table: Table, context: str) -> str:
    columns = {c: "double" for c in table.features} | {LABEL: "long", SPLIT: "string"}
    return lineage.log(
        read, name="wine", num_rows=len(table.frame), columns=columns, context=context
    )


def publish(uri: str | None = None, seed: int = 0, variant: str = datasets.BASE_VARIANT) -> dict:
    data = build(seed, variant)
    if uri is not None:
        written = lineage.write(uri, data)
        say("data")(f"wrote {written}")
        return {"uri": written, "variant": variant, "seed": seed}
    version = datasets.version_name(variant, seed)
    pointer = datasets.publish(
        datasets.data_root(), DATASET, version, FILE, data, variant=variant, seed=seed
    )
    say("data")(f"wrote {pointer['uri']} ({VARIANTS[variant]}); newest: {version}")
    return {key: pointer[key] for key in ("uri", "version", "digest", "newest")}


def v2_request(features, rows) -> dict:
    """The V2 inference request of ``rows`` (a DataFrame): one FP64 input per column."""
    return {
        "inputs": [
            {"name": c, "datatype": "FP64", "shape": [len(rows), 1], "data": rows[c].tolist()}
            for c in features
        ]
    }
