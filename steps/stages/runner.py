"""The stage runner: the sequence every alias-to-alias stage shares, written once.

A stage that reads an input alias and writes an output alias always does the same things in
the same order: resolve the input alias, check the slots it measures, read its data, open
its run, log the data read, measure, record and enforce the gates, and move the output
alias. The runner owns that sequence; a stage supplies only what is specific to its model:

- :class:`Evaluator` (evaluate): ``connect`` (the server, checked up), ``slots`` (the
  staged slot and the champion's, each checked to serve its version: :func:`check_slots`
  does it given one ``check``), ``measure`` (the metrics and gate checks, a
  :class:`Measured`); :func:`evaluate` runs it, and so does calling the instance, which is
  therefore what a :class:`~steps.spec.declare.Stage` names as its ``run``.
- :class:`Trainer` (train): ``fit`` (the model, logged in the run, and its metrics and
  gate checks, a :class:`Trained`); :func:`train` registers the version, describes it,
  judges it and moves the output alias.
- :class:`Deployer` (deploy): ``connect`` and ``export`` (what the version becomes on the
  server, switched into its slot through the back end, which restores the slot itself on
  failure: ``switch`` in :mod:`steps.serving.backend`); :func:`deploy` runs it.

Each step of the sequence may be overridden where a model needs it (``prepare``: checks
before the run opens; ``run_name``, ``params``: what the run is called and records).

What both comparing stages of every pipeline record alike is here too: :func:`vs_champion`
(the non-inferiority gate on a paired interval's lower end) and :func:`paired_metrics`.

Core side: never imports a pipeline; MLflow is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base.errors import BadInput, MlcpError
from ..decisions import gates, paired
from ..records import tracking
from ..spec.contract import live_slot, staged_slot
from .stage import (
    Champion,
    Reporter,
    champion_slot_fix,
    data_source,
    resolve_champion,
    resolve_input,
)


@dataclass(frozen=True)
class Slots:
    """What a comparing stage measures through: the challenger's ``slot`` and, when there is
    a champion, ``champion_slot`` (None with ``champion.missing`` saying why)."""

    slot: str | None  # None: measured where the stage runs, not through a server
    champion: Champion
    champion_slot: str | None = None


@dataclass
class Target:
    """What the runner resolved for a stage, handed to each of its hooks."""

    cfg: Any
    model: str
    server: Any = None  # what ``connect`` returned
    client: Any = None  # the MlflowClient the input alias was read with
    version: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # the version's tags
    slot: str | None = None
    champion: Champion | None = None
    champion_slot: str | None = None
    read: Any = None  # the data read (a DataRead), None for a stage that reads none
    data: Any = None  # and what the pipeline's reader parsed from it
    device: str = "cpu"  # a training's resolved ``cfg.device`` (``spec.determinism``)
    extra: dict = field(default_factory=dict)  # what a stage's hooks pass each other


@dataclass
class Measured:
    """What ``measure`` (or ``export``) found: ``metrics`` (logged to the stage's run),
    ``checks`` (``(gate, value)``, judged and enforced in order), ``evidence`` (beside every
    decision), the alias move's ``reason`` and the stage's ``result`` (its JSON summary)."""

    checks: list = field(default_factory=list)
    reason: str = ""
    result: dict = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    evidence: Mapping | None = None


class Stage:
    """What the runner asks of every stage: its ``report`` (a
    :class:`~steps.stages.stage.Reporter`),
    its data module (``read(uri)``, ``log(read, parsed, context)``; None: reads no data)."""

    report: Reporter
    data: Any = None
    context: str | None = "evaluation"  # what the data read is logged as (None: not logged)
    digest_in_name = True  # the run's name ends with the data's digest

    def connect(self, t: Target) -> Any:
        """The server, checked to answer, before anything else is read (None: no server);
        only ``t.cfg`` is set yet."""
        return None

    def data_uri(self, t: Target) -> str:
        return data_source(t.model, t.version, t.tags, getattr(t.cfg, "data", None))

    def prepare(self, t: Target) -> None:
        """Checks once everything is read, before the run opens (BadInput: nothing ran)."""

    def run_name(self, t: Target) -> dict:
        """The words of the run's name besides its first (:meth:`named_after`) and the data
        digest."""
        return {"v": t.version}

    def named_after(self, t: Target) -> str:
        """The run name's first word: the model acted on (a training: the recipe)."""
        return t.model

    def params(self, t: Target) -> dict:
        return {"input_alias": t.cfg.input_alias, "slot": t.slot}


class Evaluator(Stage):
    """A comparing stage: the challenger and the champion measured side by side."""

    def __call__(self, cfg) -> dict:  # a Stage's run: the instance itself
        return evaluate(self, cfg)

    def slots(self, t: Target) -> Slots:
        """Where the two versions answer. By default nowhere: the stage measures both where
        it runs (loading ``models:/<model>/<version>``), and only the champion the
        ``cfg.champion_alias`` names is resolved. A served model checks its slots instead
        (:func:`check_slots`)."""
        return Slots(None, resolve_champion(t.client, t.model, t.cfg.champion_alias, t.version))

    def measure(self, t: Target) -> Measured:
        raise NotImplementedError


class Deployer(Stage):
    """A deploy: the version exported and switched into the staged slot."""

    context = "validation"
    digest_in_name = False

    def __call__(self, cfg) -> dict:
        return deploy(self, cfg)

    def export(self, t: Target) -> Measured:
        raise NotImplementedError


@dataclass
class Trained(Measured):
    """What ``fit`` found: a :class:`Measured` whose run also logged the model
    (``model_info``, what ``mlflow.<flavour>.log_model`` returned) and names its headline
    ``metric`` and ``value`` (the start of the version's description); ``tags`` go on the
    version beside the data's and the pipeline's."""

    model_info: Any = None  # or the URI of an artifact folder the run logged (e.g. an adapter)
    metric: str = ""
    value: float = float("nan")
    tags: Mapping[str, str] = field(default_factory=dict)


class Trainer(Stage):
    """A training stage: fits a model on its data and registers it as a new version, which
    its gates judge and its output alias names (:func:`train`)."""

    context = "training"
    system_metrics = False  # sample the machine's load in the run (a long training)
    dataset = ""  # the data set (e.g. tabular/wine) whose newest version ``--data`` defaults to

    def __call__(self, cfg) -> dict:
        return train(self, cfg)

    def data_uri(self, t: Target) -> str:
        """``--data``; else the newest published version of :attr:`dataset`; else, with no
        data set named, the data module's ``default_uri()`` (a fixed place under the data
        root)."""
        from ..records import datasets

        given = getattr(t.cfg, "data", None)
        if given:
            return given
        if self.dataset:
            return datasets.newest(self.dataset)["uri"]
        default = getattr(self.data, "default_uri", None)  # a plugin may have neither
        found = default() if default is not None else ""
        if not found:
            raise BadInput("no --data given and MLCP_DATA_ROOT is not set (run `mlcp stack up`)")
        return found

    def params(self, t: Target) -> dict:
        return {}

    def fit(self, t: Target) -> Trained:
        raise NotImplementedError


def register(client, model: str, pipeline: str, info, read, run_id: str, tags=None) -> str:
    """Register the model the active run logged as a new version of ``model`` (created for
    ``pipeline`` if new), tagged with its pipeline, the data it read, the run that trained it
    and ``tags``; the run is tagged with the version. ``info`` is what
    ``mlflow.<flavour>.log_model`` returned, or the URI of an artifact folder of run
    ``run_id`` (a model that is not an MLflow flavour, such as an adapter folder). Returns the
    version."""
    import mlflow

    from ..registry import describe
    from ..spec.contract import PIPELINE_TAG, TRAIN_RUN_TAG, VERSION_TAG

    describe.register_model(client, model, pipeline)
    if isinstance(info, str):
        created = client.create_model_version(model, info, run_id=run_id)
    else:
        created = client.create_model_version(model, source=info.model_uri, model_id=info.model_id)
    version = str(created.version)
    mlflow.set_tag(VERSION_TAG, version)
    for key, value in {
        PIPELINE_TAG: pipeline,
        **read.tags,
        TRAIN_RUN_TAG: run_id,
        **(tags or {}),
    }.items():
        client.set_model_version_tag(model, version, key, value)
    return version


def log_provenance(cfg) -> None:
    """In the active run: the seed ``cfg.seed`` (when the config has one) and the
    environment (every distribution; CUDA and the GPU), as a training records them and a
    reproduction records them again."""
    from ..records import provenance

    if hasattr(cfg, "seed"):
        provenance.note_seed("seed", cfg.seed)
    provenance.log_environment()


def train(stage: Trainer, cfg) -> dict:
    """Run a training stage: resolve the device asked for (``cfg.device``, when the config
    has one), refuse a model of another pipeline, read the data, ``prepare``,
    open the run, log the data, the seed and the environment, ``fit``, register the version,
    describe it, judge the gates on it, point ``cfg.output_alias`` at it."""
    import mlflow

    from ..registry import aliases, describe

    t = Target(cfg, model=cfg.model_name)
    if hasattr(cfg, "device"):  # a device asked for and not there: bad input before any work
        from ..spec.determinism import resolve_device

        t.device = resolve_device(cfg.device)
    uri = stage.data_uri(t)  # where it reads: said before anything is asked of a server
    t.server = stage.connect(t)
    t.client = tracking.client()
    describe.check_owner(aliases.find_model(t.client, t.model), stage.report.pipeline)
    t.read, t.data = stage.data.read(uri)
    stage.prepare(t)
    name = tracking.run_name(stage.named_after(t), stage.run_name(t), t.read.digest)
    report = stage.report
    params, sampled = stage.params(t), stage.system_metrics
    with report.stage_run(t.model, name, params=params, system_metrics=sampled) as run:
        stage.data.log(t.read, t.data, stage.context)
        log_provenance(cfg)
        found = stage.fit(t)
        if found.metrics:
            mlflow.log_metrics(dict(found.metrics))
        run_id = run.info.run_id
        pipeline = report.pipeline
        t.version = register(
            t.client, t.model, pipeline, found.model_info, t.read, run_id, found.tags
        )
        report.describe_trained(t.client, t.model, t.version, t.read, found.metric, found.value)
        report.judge(found.checks, model=t.model, version=t.version, evidence=found.evidence)
    reason = found.reason or f"training gate passed ({found.metric} {found.value:.4f})"
    report.advance(t.model, cfg.output_alias, t.version, reason=reason, client=t.client)
    return {"version": t.version, **found.result, "data_digest": t.read.digest, "run_id": run_id}


def _resolve(stage: Stage, cfg) -> Target:
    t = Target(cfg, model=cfg.model_name)
    t.server = stage.connect(t)
    t.client, t.version, t.tags = resolve_input(cfg.model_name, cfg.input_alias)
    return t


def _run(stage: Stage, t: Target, body: Callable[[Target], Measured], **run) -> dict:
    """Read the data, open the run, log the data, ``body``, judge, move the output alias."""
    import mlflow

    if stage.data is not None:
        t.read, t.data = stage.data.read(stage.data_uri(t))
    stage.prepare(t)
    digest = t.read.digest if t.read is not None and stage.digest_in_name else None
    name = tracking.run_name(stage.named_after(t), stage.run_name(t), digest)
    with stage.report.stage_run(t.model, name, version=t.version, params=stage.params(t), **run):
        if t.read is not None and stage.context is not None:
            stage.data.log(t.read, t.data, stage.context)
        found = body(t)
        if found.metrics:
            mlflow.log_metrics(dict(found.metrics))
        if found.checks:
            stage.report.judge(
                found.checks, model=t.model, version=t.version, evidence=found.evidence
            )
    stage.report.advance(
        t.model, t.cfg.output_alias, t.version, reason=found.reason, client=t.client
    )
    return found.result


def evaluate(stage: Evaluator, cfg) -> dict:
    """Run a comparing stage: resolve ``cfg.input_alias``, check the slots, read the data,
    measure in the stage's run, judge the gates, point ``cfg.output_alias`` at the version."""
    t = _resolve(stage, cfg)
    slots = stage.slots(t)
    t.slot, t.champion, t.champion_slot = slots.slot, slots.champion, slots.champion_slot
    return _run(stage, t, stage.measure)


def deploy(stage: Deployer, cfg) -> dict:
    """Run a deploy: resolve ``cfg.input_alias``, read the data, export and switch the
    version in the stage's run (the back end restores the slot when that fails), judge the
    gates, point ``cfg.output_alias`` at the version."""
    t = _resolve(stage, cfg)
    t.slot = staged_slot(t.model)
    return _run(stage, t, stage.export)


def check_slots(
    t: Target,
    check: Callable[[str, str, str], Any],
    *,
    champion_alias: str,
    deploy_fix: str,
) -> Slots:
    """The staged slot and the champion's live slot, each checked with
    ``check(slot, version, fix)`` (MlcpError ending with ``fix`` when the slot does not
    serve that version): the staged one for the challenger (``deploy_fix``), the live one
    for the version ``champion_alias`` names (:func:`~steps.stages.stage.resolve_champion`)."""
    slot = staged_slot(t.model)
    check(slot, t.version, deploy_fix)
    champion = resolve_champion(t.client, t.model, champion_alias, t.version)
    if champion.version is None:
        return Slots(slot, champion)
    champion_slot = live_slot(t.model)
    check(champion_slot, champion.version, champion_slot_fix(t.model, champion))
    return Slots(slot, champion, champion_slot)


def answered_by(slot: str, version: str, answered: str) -> None:
    """MlcpError unless the slot's answer came from ``version`` (it changed under us)."""
    if answered != version:
        raise MlcpError(
            f"{slot} answered with v{answered} during the evaluation of v{version}: the slot "
            "changed under us"
        )


def vs_champion(
    name: str, metric: str, compared: paired.Comparison | str | None, margin: float
) -> gates.Check:
    """The non-inferiority gate ``name``: the lower end of the paired interval of the
    ``metric`` difference (challenger minus champion) must be >= -``margin``; with no
    comparison, its decision says why (``compared`` is then the reason)."""
    gate = gates.Gate(name, f"{metric}_difference_ci_low", ">=", -margin, against_champion=True)
    return gates.champion_check(gate, compared, "ci_low")


def compare(t: Target, metric: str, ours, theirs) -> paired.Comparison:
    """The paired comparison (:func:`steps.decisions.paired.binary`) of the challenger's and the
    champion's per-sample successes (``ours``, ``theirs``: booleans, the same samples in
    the same order) on ``metric``, within ``t.cfg.margin``."""
    return paired.binary(
        ours,
        theirs,
        name=metric,
        challenger_version=t.version,
        champion_version=t.champion.version,
        champion_alias=t.champion.alias,
        margin=t.cfg.margin,
    )


def paired_metrics(metric: str, compared: paired.Comparison, champion_value: float) -> dict:
    """The champion's ``metric``, the difference and its interval, McNemar's p-value."""
    return {
        f"champion_{metric}": champion_value,
        f"{metric}_difference": compared.estimate,
        f"{metric}_difference_ci_low": compared.ci_low,
        f"{metric}_difference_ci_high": compared.ci_high,
        "mcnemar_p_value": compared.p_value,
    }


def versus(compared: paired.Comparison | str | None, missing: str = "{}") -> str:
    """The end of an alias move's reason: ``; <the comparison>``, or ``missing`` formatted
    with why there was none."""
    if isinstance(compared, paired.Comparison):
        return f"; {compared.line()}"
    return "; " + missing.format(compared)
