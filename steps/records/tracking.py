"""Tracking conventions shared by every stage.

- one experiment per pipeline and stage, named ``<pipeline>/<stage>`` (``cv/train``);
- run names that say what ran: ``resnet18-lr0.05-bs64-e3-data-1a2b3c4d``;
- system metrics on for stage runs;
- tags ``mlcp.pipeline``, ``mlcp.stage``, ``mlcp.model`` (and ``mlcp.version`` once known),
  plus the Argo workflow name and uid when the template passed them down;
- provenance on every run (steps/records/provenance.py): the code's commit and package version,
  the image, the library versions, CUDA and GPU, the seeds.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from ..base import settings
from ..base.errors import MlcpError
from ..spec import experiments
from ..spec.contract import (
    ACTOR_TAG,
    ARGO_TAG_PREFIX,
    KIND_TAG,
    MODEL_TAG,
    PIPELINE_TAG,
    STAGE_TAG,
    VERSION_TAG,
)
from ..spec.declare import format_number
from . import provenance


def client():
    """An MlflowClient on the configured tracking server (lazy import)."""
    quiet_mlflow()
    import mlflow
    from mlflow import MlflowClient

    uri = settings.tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def registry_client(tracking_uri: str | None = None):
    """The promote path's client: MLflow's REST API without importing ``mlflow``
    (:class:`steps.base.rest.Client`); for a tracking URI that is not an http(s) server (a local
    sqlite file, say) the ``mlflow`` package's client instead."""
    from urllib.parse import urlsplit

    from ..base.rest import Client

    uri = tracking_uri or settings.tracking_uri()
    if urlsplit(uri).scheme not in ("http", "https"):
        return client()
    return Client(uri)


def quiet_mlflow() -> None:
    """Keep MLflow's chatter (run links, registry waits) out of the commands' output."""
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The pickle format is chosen on purpose (the model loads back as the module it was).
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per download


def experiment_name(pipeline: str, stage: str) -> str:
    return f"{pipeline}/{stage}"


def ensure_experiment(mlflow_client, name: str) -> str:
    """Return the id of experiment ``name``, creating it; safe when many processes race.
    Either client: ``mlflow``'s or :class:`steps.base.rest.Client`.

    The experiment carries its kind and description (steps/spec/experiments.py) from its
    creation; an older one gets those it lacks: one look-up, a write only for a missing tag
    (a kind or description someone changed in the UI is kept)."""
    from ..base.rest import error_code

    pipeline, _, stage = name.partition("/")
    wanted = experiments.experiment_tags(pipeline, stage)
    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        try:
            return mlflow_client.create_experiment(name, tags=wanted or None)
        except Exception as exc:
            if error_code(exc) is None:
                raise
            # Another process created it between our look-up and our create.
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(found.experiment_id)
    for key, value in wanted.items():
        if key not in found.tags:
            mlflow_client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def _fmt(value: Any) -> str:
    """A param or run-name value as text: a float in the shortest text that reads back the
    same (``0.05``, not ``0.0500000``; never rounded to 6 digits, which would make a
    recorded learning rate of 0.1234567 train again as 0.123457)."""
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def run_name(
    model: str, params: Mapping[str, Any] | None = None, data_digest: str | None = None
) -> str:
    """A name that says what ran: ``resnet18`` + ``{"lr": 0.05, "bs": 64}`` + a digest
    -> ``resnet18-lr0.05-bs64-data-1a2b3c4d``."""
    parts = [model]
    parts += [f"{key}{_fmt(value)}" for key, value in (params or {}).items()]
    if data_digest:
        parts.append(f"data-{data_digest[:8]}")
    return "-".join(parts)


def context_tags(
    pipeline: str, stage: str, model_name: str, version: str | int | None = None
) -> dict[str, str]:
    """The tags every run the project creates starts with (stage runs, gate decisions,
    alias-move records, workflow records): who and what, where, and its provenance."""
    tags = {
        **provenance.tags(),
        PIPELINE_TAG: pipeline,
        STAGE_TAG: stage,
        MODEL_TAG: model_name,
        ACTOR_TAG: settings.actor(),
    }
    if version is not None:
        tags[VERSION_TAG] = str(version)
    for key, value in settings.argo_context().items():
        tags[ARGO_TAG_PREFIX + key] = value
    return tags


@contextlib.contextmanager
def stage_run(
    pipeline: str,
    stage: str,
    model_name: str,
    name: str,
    *,
    version: str | int | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    system_metrics: bool = True,
) -> Iterator[Any]:
    """Open the stage's run in ``<pipeline>/<stage>``; the run ends FAILED on an exception."""
    import mlflow

    mlflow_client = client()
    all_tags = context_tags(pipeline, stage, model_name, version)
    all_tags[KIND_TAG] = "stage"
    all_tags.update(tags or {})
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(2)
    try:
        experiment_id = ensure_experiment(mlflow_client, experiment_name(pipeline, stage))
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=name,
            tags=all_tags,
            log_system_metrics=system_metrics,
        )
    except Exception as exc:  # the server is down or refuses: say so plainly
        raise MlcpError(f"cannot start an MLflow run on {settings.tracking_uri()}: {exc}") from exc
    with run:
        if params:
            mlflow.log_params({k: _fmt(v) for k, v in params.items()})
        yield run
