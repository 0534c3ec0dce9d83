"""``mlcp reproduce MODEL@ALIAS``: train the version an alias names again, from what its
training recorded, and say whether it came out the same.

1. The alias names a version; the version names its training run (``mlcp.train_run``), the
   run its params (epochs, learning rate, seed, image size, ...), the version its data set
   (``mlcp.data.source``) and the data's digest (``mlcp.data.digest``).
2. Refused with exit 2, before anything is trained: a data set whose bytes no longer have the
   recorded digest (the message names both), and code that is not the code that trained
   it, the git commit or the package version of the training run's provenance tags
   (``--allow-code-change`` goes on anyway). A version trained before provenance was
   recorded has neither tag: a warning says so and it goes on.
3. The pipeline of the model (its ``mlcp.pipeline`` tag) trains again with the recorded
   params and seed on the same bytes (its declaration's ``reproduce``, see
   :class:`Request`), in a run of its own in ``<pipeline>/reproduce``, tagged
   ``mlcp.reproduces=<version>``, registering nothing unless ``--register`` (then a new
   version tagged ``mlcp.reproduces=<version>``; no alias moves either way).
   The models a training loaded by name are loaded at the revision it recorded
   (``mlcp.revision.<input>``, steps/spec/pinning.py), never unpinned; the recorded revisions are
   compared with those of the new training run, and a revision that differs makes the
   verdict ``differs``. A version trained with ``--allow-unpinned`` gets a warning.
4. The recorded metrics are compared with the new ones (CV: validation accuracy and the
   last training loss; LLM: eval loss, perplexity and the last training loss) and, CV, the
   predictions on the test split of the recorded version's model, loaded from MLflow, with
   the new model's. The verdict:

   - ``identical``: every metric equal, every prediction equal;
   - ``within tolerance``: each metric's relative difference ``|new - recorded| /
     max(|new|, |recorded|)`` is at most ``--tolerance`` (default 1e-6), and so is the share
     of test predictions that differ;
   - ``differs``: anything more.

   It is recorded as a run of its own kind (``mlcp.kind=reproduce``, so that the gates'
   pass/fail records are not confused with it) in ``<pipeline>/reproduce``, nested under the
   new training run: both sides' params and metrics, the prediction agreement, the verdict
   (``mlcp.verdict``), the versions, and ``reproduce.json``.

Exit 0 for identical or within tolerance, 3 for differs (as a gate that said no), 2 for bad
input, 1 for anything else. On a CPU the training is deterministic (steps/spec/determinism.py:
fixed threads, deterministic algorithms, seeded data order), so a reproduction on the same
kind of machine is identical; on a GPU, or on another CPU type, kernels may round otherwise
and the honest verdict is at best "within tolerance" for a suitable ``--tolerance``.

Core side: it never imports a pipeline; the pipeline is looked up by name among the
declared ones (the CLI loads every installed pipeline first: ``steps.spec.pipelines``);
nothing heavy at import time.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base import outputs
from ..base.errors import BadInput, RecordFailed
from ..records import tracking
from ..registry import aliases
from ..spec import pinning
from ..spec.contract import (
    DATA_DIGEST_TAG,
    DATA_SOURCE_TAG,
    GIT_COMMIT_TAG,
    KIND_TAG,
    LIVE,
    PACKAGE_VERSION_TAG,
    PIPELINE_TAG,
    REPRODUCES_TAG,
    TRAIN_RUN_TAG,
    UNKNOWN,
    VERDICT_TAG,
    show_version,
)
from ..spec.declare import Config, Stage, alias_option, declared_pipelines, format_number, option
from .stage import say

NAME = "reproduce"  # the command, the experiment <pipeline>/reproduce, the template
KIND = "reproduce"  # mlcp.kind of the record run
IDENTICAL, WITHIN_TOLERANCE, DIFFERS = "identical", "within tolerance", "differs"
VERDICTS = (IDENTICAL, WITHIN_TOLERANCE, DIFFERS)
DEVICES = ("recorded", "auto", "cpu", "cuda")
DEFAULT_TOLERANCE = 1e-6

report = say(NAME)
EPILOG = (
    "Verdicts: identical (every compared metric and, CV, every test prediction equal), "
    "within tolerance (each metric's relative difference and the share of differing test "
    "predictions at most --tolerance), differs. Exit codes: 0 identical or within "
    "tolerance, 3 differs (as a quality gate that said no), 2 bad input (unknown model or "
    "alias; the data's digest or the code changed: nothing is trained), 1 anything else. "
    "On a CPU the training is deterministic, so the same kind of machine gives identical; "
    "on a GPU (or another CPU type) expect at best within tolerance."
)


@dataclass(kw_only=True)
class ReproduceConfig(Config):
    alias: str = alias_option(LIVE, reads=True)
    allow_code_change: bool = option(
        False,
        help="go on when the running code's git commit or package version is not the one "
        "that trained the version (the verdict then says how far the result moved)",
    )
    register: bool = option(
        False,
        help="register the new training as a new version tagged mlcp.reproduces=<version> "
        "(no alias moves)",
    )
    tolerance: float = option(
        DEFAULT_TOLERANCE,
        help="'within tolerance' when each metric's relative difference and the share of "
        "test predictions that differ are at most this",
        min=0,
        max=1,
    )
    device: str = option(
        "recorded",
        help="where to train: recorded (where the version was trained), auto, cpu or cuda",
        choices=DEVICES,
    )


@dataclass(frozen=True)
class Request:
    """What a pipeline's ``reproduce`` (``Pipeline.reproduce`` in steps/spec/declare.py) is given.

    It must read the data at ``data_uri`` with its own reader and refuse, before training,
    bytes whose digest is not ``data_digest`` (``lineage.check_unchanged``); train with
    ``params`` on ``train_device`` in its ``<pipeline>/reproduce`` run, tagged ``run_tags``;
    register a version tagged ``run_tags`` only when ``register``. It returns a dict:

    - ``run_id``, ``run_name``: its training run;
    - ``params``: what that run recorded;
    - ``metrics``: ``{name: value}`` of the measures to compare with the recorded run's;
    - ``predictions`` (optional): ``{"split", "count", "differing", "max_abs_diff"}``, the
      recorded version's model against the new one on the same inputs;
    - ``version``: the version it registered, else None.
    """

    model: str
    version: str
    tags: Mapping[str, str]  # the version's tags
    params: Mapping[str, str]  # the training run's params, as recorded
    data_uri: str
    data_digest: str
    device: str  # the ReproduceConfig's device: recorded, auto, cpu or cuda
    register: bool
    run_tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def train_device(self) -> str:
        """The device to train on: the recorded one when asked for ``recorded``."""
        if self.device != "recorded":
            return self.device
        return self.params.get("device") or "auto"


# ------------------------------------------------------------------------ the checks


@contextlib.contextmanager
def recorded_params(request: Request) -> Iterator[None]:
    """Around building a training config from ``request.params``: a missing or malformed
    recorded param is bad input that names the version (it cannot be trained again)."""
    try:
        yield
    except KeyError as exc:
        raise BadInput(
            f"{request.model} v{request.version}: its training run recorded no {exc.args[0]} "
            "param, so it cannot be trained again as it was"
        ) from None
    except ValueError as exc:
        raise BadInput(f"{request.model} v{request.version}: a recorded param: {exc}") from None


def training_run(client, model: str, version: str, tags: Mapping[str, str]):
    """The run that trained ``model`` v``version`` (its ``mlcp.train_run`` tag, else the
    version's own run); BadInput when there is none to read."""
    from mlflow.exceptions import MlflowException

    run_id = tags.get(TRAIN_RUN_TAG)
    if not run_id:
        run_id = getattr(aliases.get_version(client, model, version), "run_id", None)
    if not run_id:
        raise BadInput(
            f"{model} v{version} names no training run (no {TRAIN_RUN_TAG} tag): it was not "
            "trained by an `mlcp <pipeline> train` stage, so it cannot be trained again"
        )
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise BadInput(
            f"{model} v{version}: its training run {run_id} cannot be read: {exc}"
        ) from None


def check_code(
    run_tags: Mapping[str, str], now: Mapping[str, str], *, allow: bool
) -> tuple[list[str], list[str]]:
    """(differences, warnings) between the code that trained (the training run's provenance
    tags) and the code running ``now`` (``provenance.tags()``). BadInput naming both sides
    of each difference unless ``allow``."""
    checked = ((GIT_COMMIT_TAG, "git commit"), (PACKAGE_VERSION_TAG, "package version"))
    warnings, differences = [], []
    if all(run_tags.get(key) is None for key, _ in checked):
        warnings.append(
            "the version was trained before provenance was recorded (its training run has no "
            f"{GIT_COMMIT_TAG} or {PACKAGE_VERSION_TAG} tag): the code cannot be compared; "
            "going on"
        )
        return differences, warnings
    for key, what in checked:
        recorded, running = run_tags.get(key), now.get(key)
        if recorded in (None, "", UNKNOWN) or running in (None, "", UNKNOWN):
            warnings.append(
                f"{what} not compared: recorded {recorded or 'nothing'}, running "
                f"{running or 'nothing'}"
            )
        elif recorded != running:
            differences.append(f"{what} {recorded} (recorded) vs {running} (running)")
    if differences and not allow:
        raise BadInput(
            "the code is not the code that trained the version: "
            + "; ".join(differences)
            + " (pass --allow-code-change to train it again anyway)"
        )
    if differences:
        warnings.append("code changed, going on (--allow-code-change): " + "; ".join(differences))
    return differences, warnings


def relative_difference(recorded: float, new: float) -> float:
    """``|new - recorded| / max(|new|, |recorded|)``: 0 when equal, inf when not a number."""
    if recorded == new:
        return 0.0
    if math.isnan(recorded) or math.isnan(new):
        return math.inf
    return abs(new - recorded) / max(abs(new), abs(recorded))


def judge(
    recorded: Mapping[str, float],
    new: Mapping[str, float],
    predictions: Mapping[str, Any] | None,
    tolerance: float,
) -> tuple[str, dict[str, dict]]:
    """The verdict and, per metric, both values and their relative difference. Only the
    metrics measured on both sides are compared; at least one must be."""
    compared = {
        name: {
            "recorded": float(recorded[name]),
            "reproduced": float(new[name]),
            "relative_difference": relative_difference(float(recorded[name]), float(new[name])),
        }
        for name in new
        if name in recorded
    }
    if not compared:
        raise BadInput(
            f"nothing to compare: the training run recorded none of {', '.join(sorted(new))}"
        )
    differing = int((predictions or {}).get("differing", 0))
    count = int((predictions or {}).get("count", 0))
    share = differing / count if count else 0.0
    if all(m["relative_difference"] == 0 for m in compared.values()) and differing == 0:
        return IDENTICAL, compared
    within = all(m["relative_difference"] <= tolerance for m in compared.values())
    return (WITHIN_TOLERANCE if within and share <= tolerance else DIFFERS), compared


# ------------------------------------------------------------------------ the stage


def pipeline_of(name: str):
    """The declared pipeline ``name`` (a model's ``mlcp.pipeline`` tag) that can reproduce.
    The declarations are read from ``steps.spec.declare``'s registry, which the CLI fills by
    loading ``steps.spec.pipelines`` (this module never imports a pipeline)."""
    known = {p.name: p for p in declared_pipelines()}
    found = known.get(name)
    if found is None or found.reproduce is None:
        able = ", ".join(p.name for p in known.values() if p.reproduce is not None)
        raise BadInput(f"pipeline {name!r} cannot reproduce a training (those that can: {able})")
    return found


def reproduce(cfg: ReproduceConfig, *, now: Callable[[], Mapping[str, str]] | None = None) -> dict:
    """Train ``model@alias`` again and judge the result (see the module's docstring); the
    summary as a dict. ``now``: the running code's provenance (default
    ``provenance.tags``)."""
    from ..records import provenance

    client = tracking.client()
    model = aliases.get_model(client, cfg.model_name)
    version = aliases.resolve(client, cfg.model_name, cfg.alias)
    mv = aliases.get_version(client, cfg.model_name, version)
    tags = dict(mv.tags)
    pipeline_name = model.tags.get(PIPELINE_TAG) or tags.get(PIPELINE_TAG)
    if not pipeline_name:
        raise BadInput(f"registered model {cfg.model_name!r} has no {PIPELINE_TAG} tag")
    pipeline = pipeline_of(pipeline_name)
    outputs.write({outputs.PIPELINE: pipeline.name})  # the template's metrics label
    ref = f"{cfg.model_name}@{cfg.alias}"
    report(f"{ref} is {show_version(version)} ({pipeline.name} pipeline)")
    run = training_run(client, cfg.model_name, version, tags)
    data_uri, data_digest = tags.get(DATA_SOURCE_TAG), tags.get(DATA_DIGEST_TAG)
    if not data_uri or not data_digest:
        raise BadInput(
            f"{cfg.model_name} v{version} has no {DATA_SOURCE_TAG} or {DATA_DIGEST_TAG} tag: "
            "the data it was trained on is not known"
        )
    code_changes, warnings = check_code(
        run.data.tags, (now or provenance.tags)(), allow=cfg.allow_code_change
    )
    for warning in warnings:
        report(f"warning: {warning}")
    request = Request(
        model=cfg.model_name,
        version=version,
        tags=tags,
        params=dict(run.data.params),
        data_uri=data_uri,
        data_digest=data_digest,
        device=cfg.device,
        register=cfg.register,
        run_tags={REPRODUCES_TAG: version},
    )
    report(
        f"training {show_version(version)} again from run {run.info.run_id} on {data_uri} "
        f"(digest {data_digest})"
    )
    if pinning.of_run(run.data.tags)["allow_unpinned"]:
        warnings.append(
            "the version was trained from a model loaded by name without a pinned revision "
            "(--allow-unpinned): it is loaded again at the revision the hub resolved then"
        )
        report(f"warning: {warnings[-1]}")
    result = pipeline.reproduce(request)
    verdict, metrics = judge(
        run.data.metrics, result["metrics"], result.get("predictions"), cfg.tolerance
    )
    revisions = pinning.compare(run.data.tags, client.get_run(result["run_id"]).data.tags)
    moved = [name for name, r in revisions.items() if not r["same"]]
    if moved:
        verdict = DIFFERS
        warnings.append(
            "the models loaded are not those the version recorded: "
            + "; ".join(
                f"{n} {revisions[n]['recorded']} (recorded) vs {revisions[n]['reproduced']}"
                for n in moved
            )
        )
    summary = {
        "model": cfg.model_name,
        "alias": cfg.alias,
        "version": version,
        "pipeline": pipeline.name,
        "verdict": verdict,
        "tolerance": cfg.tolerance,
        "metrics": metrics,
        "revisions": revisions,
        "predictions": result.get("predictions"),
        "recorded_run": run.info.run_id,
        "reproduced_run": result["run_id"],
        "registered_version": result.get("version"),
        "data": {"uri": data_uri, "digest": data_digest},
        "code_changes": code_changes,
        "warnings": warnings,
        "params": {"recorded": dict(run.data.params), "reproduced": result.get("params", {})},
    }
    summary["record_run"] = record(client, summary)
    return summary


def record(client, summary: dict) -> str:
    """The reproduction's record run in ``<pipeline>/reproduce`` (nested under the new
    training run); its id. RecordFailed when it cannot be written."""
    import time

    from mlflow.entities import Metric, Param

    pipeline, model, version = summary["pipeline"], summary["model"], summary["version"]
    verdict = summary["verdict"]
    try:
        experiment_id = tracking.ensure_experiment(client, tracking.experiment_name(pipeline, NAME))
        tags = tracking.context_tags(pipeline, NAME, model, version)
        tags.update(
            {
                KIND_TAG: KIND,
                VERDICT_TAG: verdict,
                REPRODUCES_TAG: version,
                "mlflow.parentRunId": summary["reproduced_run"],
            }
        )
        run = client.create_run(
            experiment_id,
            run_name=f"reproduce-{model}-v{version}-{verdict.replace(' ', '-')}",
            tags=tags,
        )
        run_id = run.info.run_id
        registered = summary["registered_version"]
        params = {
            "model": model,
            "alias": summary["alias"],
            "version": version,
            "tolerance": format_number(float(summary["tolerance"])),
            "recorded_run": summary["recorded_run"],
            "reproduced_run": summary["reproduced_run"],
            "registered_version": registered or "none",
            "data_uri": summary["data"]["uri"],
            "data_digest": summary["data"]["digest"],
        }
        for name, revision in summary.get("revisions", {}).items():
            for side in ("recorded", "reproduced"):
                params[f"revision.{name}.{side}"] = revision[side] or "none"
        for side, values in summary["params"].items():
            params.update({f"{side}.{k}": str(v) for k, v in values.items()})
        now = int(time.time() * 1000)
        metrics = []
        for name, m in summary["metrics"].items():
            for key in ("recorded", "reproduced", "relative_difference"):
                if math.isfinite(m[key]):
                    metrics.append(Metric(f"{key}.{name}", m[key], now, 0))
        predictions = summary["predictions"] or {}
        for key in ("count", "differing", "max_abs_diff"):
            if key in predictions and math.isfinite(float(predictions[key])):
                metrics.append(Metric(f"predictions.{key}", float(predictions[key]), now, 0))
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        )
        client.log_text(run_id, json.dumps(summary, indent=2, default=str), "reproduce.json")
        client.set_terminated(run_id, "FINISHED")
    except Exception as exc:
        raise RecordFailed(
            f"could not record the reproduction of {model} v{version}: {exc}"
        ) from exc
    return run_id


def summary_lines(summary: dict) -> list[str]:
    """The reproduction for people: the verdict, each metric, the predictions, the runs."""
    model, version = summary["model"], summary["version"]
    lines = [
        f"{model}@{summary['alias']} ({show_version(version)}) trained again: "
        f"{summary['verdict']} (tolerance {summary['tolerance']:g})"
    ]
    for name, m in summary["metrics"].items():
        difference = m["relative_difference"]
        same = "equal" if difference == 0 else f"relative difference {difference:.3g}"
        lines.append(
            f"  {name}: recorded {m['recorded']:.10g}, reproduced {m['reproduced']:.10g} ({same})"
        )
    for name, revision in summary.get("revisions", {}).items():
        same = "the same" if revision["same"] else "NOT the same"
        lines.append(
            f"  {name} revision: recorded {revision['recorded'] or 'none'}, reproduced "
            f"{revision['reproduced'] or 'none'} ({same})"
        )
    predictions = summary["predictions"]
    if predictions:
        equal = predictions["count"] - predictions["differing"]
        lines.append(
            f"  {predictions['split']} predictions: {equal} of {predictions['count']} equal "
            f"(largest output difference {predictions['max_abs_diff']:.3g})"
        )
    lines.append(
        f"  runs: recorded {summary['recorded_run']}, reproduced {summary['reproduced_run']}, "
        f"record {summary['record_run']}"
    )
    registered = summary["registered_version"]
    lines.append(
        f"  registered {model} {show_version(registered)} (mlcp.reproduces={version})"
        if registered
        else "  registered nothing (--register to keep it as a version)"
    )
    return lines


REPRODUCE = Stage(
    "",
    NAME,
    "train the version an alias names again and say whether it came out the same "
    "(exit 0 identical or within tolerance, 3 differs)",
    ReproduceConfig,
    reproduce,
    title="Reproduce the training of a model version",
    description=(
        "Trains the version alias names again with its recorded params, seed and data "
        "(refused when the data's digest or the code changed), compares the metrics and, "
        "CV, the test predictions, and records the verdict (identical, within tolerance, "
        "differs) in <pipeline>/reproduce. Moves no alias; registers only with register=true."
    ),
)
