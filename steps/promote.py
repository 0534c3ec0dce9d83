"""Promote, rollback, history and lineage: the one stage every pipeline shares.

Every alias move is an MLflow run in ``<pipeline>/promote`` (``mlcp.kind=alias-move``) with
the model, alias, from- and to-version, action, reason, actor, Argo workflow and the gate
runs relied on. The record is opened *before* the alias is written and closed after the
write was verified, so a move is never unrecorded: a record left RUNNING marks a move whose
outcome was never confirmed, and ``history`` shows it as such.

Rollback (``previous`` -> ``live``) does not swap: the history of ``live`` is replayed as a
stack (a promotion pushes, a rollback pops), so after rolling back from v5 to v4,
``previous`` names the version that was live before v4, and v5 is tagged as rolled back.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import aliases, gates, settings, tracking
from .contract import CHAIN, LIVE, PREVIOUS
from .declare import Declared, Stage, option
from .errors import BadInput, ConcurrentChange, GateFailed, RecordFailed

LOCK_TIMEOUT_S = 120.0
NONE = "none"


def version_number(text: str) -> str | None:
    """A version flag's text: empty is "not given", ``none`` is "unset", else a number."""
    if text == "":  # an Argo parameter left empty means "not given"
        return None
    if text.lower() == NONE:
        return NONE
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"not a model version number: {text!r}")
    return str(int(text))


def _alias_text(text: str) -> str:
    try:
        return aliases.check_alias_name(text)
    except BadInput as exc:
        raise ValueError(str(exc)) from None


@dataclass(kw_only=True)
class PromoteConfig(Declared):
    model_name: str = option(help="registered model name in MLflow")
    source_alias: str = option(
        help="alias naming the version to promote (previous for a rollback)",
        parse=_alias_text,
        enum=CHAIN,
    )
    target_alias: str = option(
        help="alias to move to that version (live keeps the old live as previous)",
        parse=_alias_text,
        enum=CHAIN,
    )
    require_gates: tuple[str, ...] = option(
        (),
        help="comma-separated gates the version must have a passing decision run for (empty: none)",
    )
    expect_version: str | None = option(
        None,
        help="refuse unless source-alias names this version (empty: any)",
        parse=version_number,
    )
    expect_current: str | None = option(
        None,
        help="refuse unless target-alias names this version now ('none': unset; empty: any)",
        parse=version_number,
        argo=False,
    )
    reason: str = option("", help="why; recorded with the move (required when force is true)")
    force: bool = option(
        False, help="promote despite missing gates (needs a reason; recorded as forced)"
    )
    dry_run: bool = option(
        False,
        help="show the moves and exit with the code the real run would have; change nothing",
    )
    json: bool = option(False, help="print the outcome as JSON", argo=False)


@dataclass(kw_only=True)
class RollbackConfig(Declared):
    model_name: str = option(help="registered model name in MLflow")
    expect_version: str | None = option(
        None, help="refuse unless previous names this version (empty: any)", parse=version_number
    )
    require_gates: tuple[str, ...] = option(
        (), help="comma-separated gates the restored version must have passed (empty: none)"
    )
    reason: str = option("rollback", help="why; recorded with the move")
    dry_run: bool = option(False, help="show the moves, change nothing")
    json: bool = option(False, help="print the outcome as JSON", argo=False)


@dataclass
class Move:
    """One alias change (or a recorded no-op)."""

    alias: str
    from_version: str | None
    to_version: str | None
    action: str  # promote | rollback | noop | follow | remove

    def describe(self) -> str:
        if self.action == "noop":
            return f"{self.alias}: already v{self.to_version} (no-op)"
        if self.to_version is None:
            return f"{self.alias}: v{self.from_version} -> removed"
        start = f"v{self.from_version}" if self.from_version else "unset"
        return f"{self.alias}: {start} -> v{self.to_version} ({self.action})"


@dataclass
class Outcome:
    model: str
    version: str
    moves: list[Move]
    record_run_ids: list[str] = field(default_factory=list)
    gate_runs: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- locking


@contextlib.contextmanager
def model_lock(model: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise writers of one model's aliases on this machine (Argo's mutex does it in the
    cluster). The lock file is keyed by tracking server and model name."""
    key = hashlib.sha256(f"{settings.tracking_uri()}|{model}".encode()).hexdigest()[:24]
    folder = Path(tempfile.gettempdir()) / "mlcp-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key}.lock", "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConcurrentChange(
                        f"another promotion of {model!r} has held the lock for {timeout:.0f} s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------- records


def _v(version: str | None) -> str:
    return NONE if version is None else str(version)


def _open_record(
    client,
    experiment_id: str,
    model: str,
    move: Move,
    *,
    operation: str,
    reason: str,
    source_alias: str,
    gate_runs: Iterable[str],
    forced: bool,
    pipeline: str,
) -> str:
    tags = tracking.context_tags(pipeline, "promote", model, move.to_version)
    tags.update(
        {
            tracking.KIND: "alias-move",
            "mlcp.alias": move.alias,
            "mlcp.from_version": _v(move.from_version),
            "mlcp.to_version": _v(move.to_version),
            "mlcp.action": move.action,
            "mlcp.source_alias": source_alias,
            "mlcp.reason": reason or "",
            "mlcp.forced": str(bool(forced)).lower(),
            "mlcp.gate_runs": ",".join(gate_runs),
            "mlcp.operation": operation,
            "mlcp.seq": str(time.time_ns()),
        }
    )
    name = f"{model}-{move.alias}-{_v(move.from_version)}-to-{_v(move.to_version)}"
    if move.action != "promote":
        name += f"-{move.action}"
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    from mlflow.entities import Param

    client.log_batch(
        run.info.run_id,
        params=[
            Param("model", model),
            Param("alias", move.alias),
            Param("from_version", _v(move.from_version)),
            Param("to_version", _v(move.to_version)),
            Param("action", move.action),
        ],
    )
    return run.info.run_id


# ---------------------------------------------------------------------------- history


@dataclass
class Record:
    run_id: str
    time: str
    seq: int
    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    action: str
    reason: str
    actor: str
    forced: bool
    source_alias: str
    gate_runs: list[str]
    workflow_name: str
    workflow_uid: str
    status: str  # FINISHED = confirmed, FAILED = not applied, RUNNING = unconfirmed

    @classmethod
    def from_run(cls, run) -> Record:
        tags = run.data.tags

        def version(key: str) -> str | None:
            value = tags.get(key, NONE)
            return None if value == NONE else value

        return cls(
            run_id=run.info.run_id,
            time=datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(
                timespec="seconds"
            ),
            seq=int(tags.get("mlcp.seq", run.info.start_time * 1_000_000)),
            model=tags.get("mlcp.model", ""),
            alias=tags.get("mlcp.alias", ""),
            from_version=version("mlcp.from_version"),
            to_version=version("mlcp.to_version"),
            action=tags.get("mlcp.action", ""),
            reason=tags.get("mlcp.reason", ""),
            actor=tags.get("mlcp.actor", ""),
            forced=tags.get("mlcp.forced") == "true",
            source_alias=tags.get("mlcp.source_alias", ""),
            gate_runs=[r for r in tags.get("mlcp.gate_runs", "").split(",") if r],
            workflow_name=tags.get("mlcp.argo.workflow_name", ""),
            workflow_uid=tags.get("mlcp.argo.workflow_uid", ""),
            status=run.info.status,
        )


def _search_all(client, experiment_ids: list[str], flt: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=flt, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def history(client, model: str, alias: str | None = None) -> list[Record]:
    """Every recorded move of ``model``'s aliases, oldest first. Records of moves that were
    refused while being written (FAILED) are left out; RUNNING ones are unconfirmed."""
    experiments = client.search_experiments(filter_string="name LIKE '%/promote'")
    if not experiments:
        return []
    flt = f"tags.`mlcp.kind` = 'alias-move' AND tags.`mlcp.model` = '{_quote(model)}'"
    if alias:
        flt += f" AND tags.`mlcp.alias` = '{_quote(alias)}'"
    runs = _search_all(client, [e.experiment_id for e in experiments], flt)
    records = sorted((Record.from_run(r) for r in runs), key=lambda r: r.seq)
    return [r for r in records if r.status != "FAILED"]


def _quote(text: str) -> str:
    if "'" in text:
        raise BadInput(f"names may not contain quotes: {text!r}")
    return text


def live_stack(records: Iterable[Record], live: str = LIVE) -> list[str]:
    """Replay confirmed moves of ``live``: promotions push, rollbacks pop."""
    stack: list[str] = []
    for record in records:
        if record.alias != live or record.status != "FINISHED" or record.to_version is None:
            continue
        if record.action == "rollback":
            if stack and stack[-1] == record.from_version:
                stack.pop()
            if not stack or stack[-1] != record.to_version:
                stack.append(record.to_version)
        elif record.action == "promote":
            if not stack or stack[-1] != record.to_version:
                stack.append(record.to_version)
    return stack


# ---------------------------------------------------------------------------- promote


def _check_gates(client, model: str, version: str, required: list[str]) -> list[str]:
    """Return the passing decision runs for ``required``; GateFailed naming what is missing."""
    statuses = gates.recorded(client, model, version, required)
    missing = [s for s in statuses if s.verdict != gates.PASS]
    if missing:
        detail = ", ".join(f"{s.name} ({s.verdict or 'no decision recorded'})" for s in missing)
        raise GateFailed(
            f"{model} v{version} lacks a passing decision for the required gate(s): {detail}; "
            "use --force --reason TEXT to override",
            version=version,
        )
    return [s.run_id for s in statuses if s.run_id]


def plan(
    client,
    model: str,
    source_alias: str,
    target_alias: str,
    *,
    expect_version=None,
    expect_current=aliases.UNSET,
) -> tuple[str, list[Move], dict[str, str]]:
    """Work out the moves without writing anything; BadInput for an impossible request.
    Returns the version, the moves, and the registered model's tags."""
    aliases.check_alias_name(source_alias)
    aliases.check_alias_name(target_alias)
    if source_alias == target_alias:
        raise BadInput(f"source and target alias are both {source_alias!r}")
    registered = aliases.get_model(client, model)
    current = {a: str(v) for a, v in registered.aliases.items()}
    rollback = source_alias == PREVIOUS and target_alias == LIVE
    if rollback and PREVIOUS not in current:
        live = current.get(LIVE)
        raise BadInput(
            f"model {model!r} has no previous version to roll back to "
            f"(live is {aliases._v(live)}); nothing was changed"
        )
    version = aliases.resolve(client, model, source_alias, current)
    if expect_version is not None and str(expect_version) != version:
        raise BadInput(
            f"{model}@{source_alias} is v{version}, not the expected v{expect_version}; "
            "nothing was changed"
        )
    target_now = current.get(target_alias)
    if expect_current is not aliases.UNSET:
        wanted = None if expect_current in (None, NONE) else str(expect_current)
        if target_now != wanted:
            raise BadInput(
                f"{model}@{target_alias} is {aliases._v(target_now)}, expected "
                f"{aliases._v(wanted)}; "
                "nothing was changed"
            )
    model_tags = dict(registered.tags)
    if target_now == version:
        return version, [Move(target_alias, target_now, version, "noop")], model_tags
    if rollback:
        moves = [Move(LIVE, target_now, version, "rollback")]
        records = history(client, model, LIVE)
        stack = live_stack(records)
        if stack and stack[-1] == target_now:
            stack.pop()
        below = [v for v in stack[:-1] if v not in (version, target_now)] if stack else []
        if stack and stack[-1] != version:
            below = []  # the history does not explain the aliases: claim nothing
        new_previous = below[-1] if below else None
        if new_previous is None:
            moves.append(Move(PREVIOUS, version, None, "remove"))
        else:
            moves.append(Move(PREVIOUS, version, new_previous, "follow"))
        return version, moves, model_tags
    moves = []
    if target_alias == LIVE and target_now is not None:
        moves.append(Move(PREVIOUS, current.get(PREVIOUS), target_now, "follow"))
    moves.append(Move(target_alias, target_now, version, "promote"))
    return version, moves, model_tags


def promote(
    model: str,
    source_alias: str,
    target_alias: str,
    *,
    expect_version: str | int | None = None,
    expect_current=aliases.UNSET,
    require_gates: Iterable[str] = (),
    force: bool = False,
    reason: str = "",
    dry_run: bool = False,
    client=None,
) -> Outcome:
    """Move ``target_alias`` to the version ``source_alias`` names, recording every move."""
    required = [g for g in require_gates if g]
    if force and not reason.strip():
        raise BadInput("--force needs --reason TEXT: a forced promotion is always explained")
    client = client or tracking.client()
    with model_lock(model):
        version, moves, model_tags = plan(
            client,
            model,
            source_alias,
            target_alias,
            expect_version=expect_version,
            expect_current=expect_current,
        )
        is_noop = moves[0].action == "noop"
        gate_runs: list[str] = []
        if required and not is_noop:
            try:
                gate_runs = _check_gates(client, model, version, required)
            except GateFailed:
                if not force:
                    raise
        outcome = Outcome(model, version, moves, gate_runs=gate_runs, dry_run=dry_run)
        if dry_run:
            return outcome
        _apply(
            client,
            model,
            model_tags.get("mlcp.pipeline", "registry"),
            source_alias,
            outcome,
            reason,
            force,
            serving=model_tags.get("mlcp.serving"),
        )
        return outcome


def _apply(
    client, model, pipeline, source_alias, outcome: Outcome, reason, force, serving=None
) -> None:
    operation = uuid.uuid4().hex
    try:
        experiment_id = tracking.ensure_experiment(
            client, tracking.experiment_name(pipeline, "promote")
        )
        run_ids = [
            _open_record(
                client,
                experiment_id,
                model,
                move,
                operation=operation,
                reason=reason,
                source_alias=source_alias,
                gate_runs=outcome.gate_runs,
                forced=force,
                pipeline=pipeline,
            )
            for move in outcome.moves
        ]
    except Exception as exc:
        raise RecordFailed(f"could not record the move, so nothing was moved: {exc}") from exc
    outcome.record_run_ids = run_ids
    live_move = next((m for m in outcome.moves if m.alias == LIVE), None)
    if live_move is not None and live_move.to_version is not None:
        try:  # traffic first: the alias moves only once the server serves the version
            from .serving.follow import follow_live

            follow_live(client, model, live_move.to_version, serving)
        except Exception as exc:
            for run_id in run_ids:
                with contextlib.suppress(Exception):
                    client.set_tag(run_id, "mlcp.error", str(exc)[:4000])
                    client.set_terminated(run_id, "FAILED")
            raise
    done = 0
    try:
        for move, run_id in zip(outcome.moves, run_ids, strict=True):
            if move.action == "noop":
                pass
            elif move.to_version is None:
                aliases.delete_alias(client, model, move.alias, expect_current=move.from_version)
            else:
                aliases.set_alias(
                    client,
                    model,
                    move.alias,
                    move.to_version,
                    expect_current=move.from_version,
                    known=True,
                )
            client.set_terminated(run_id, "FINISHED")
            done += 1
    except Exception as exc:
        for run_id in run_ids[done:]:
            with contextlib.suppress(Exception):
                client.set_tag(run_id, "mlcp.error", str(exc)[:4000])
                client.set_terminated(run_id, "FAILED")
        raise
    rolled = next((m for m in outcome.moves if m.action == "rollback"), None)
    if rolled is not None and rolled.from_version is not None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        for key, value in (
            ("mlcp.rolled_back", "true"),
            ("mlcp.rolled_back_at", stamp),
            ("mlcp.rolled_back_to", str(rolled.to_version)),
            ("mlcp.rolled_back_run", run_ids[0]),
        ):
            client.set_model_version_tag(model, rolled.from_version, key, value)


def assign(model: str, alias: str, version: str | int, *, reason: str = "", client=None) -> Outcome:
    """A stage writes its output alias for the version it produced, recorded like any move.
    ``live`` and ``previous`` move only through :func:`promote` and :func:`rollback`."""
    aliases.check_alias_name(alias)
    if alias in (LIVE, PREVIOUS):
        raise BadInput(f"{alias!r} moves only through `mlcp promote` / `mlcp rollback`")
    client = client or tracking.client()
    version = str(version)
    with model_lock(model):
        aliases.get_version(client, model, version)
        registered = aliases.get_model(client, model)
        now = registered.aliases.get(alias)
        now = None if now is None else str(now)
        pipeline = registered.tags.get("mlcp.pipeline", "registry")
        action = "noop" if now == version else "assign"
        outcome = Outcome(model, version, [Move(alias, now, version, action)])
        _apply(client, model, pipeline, f"version {version}", outcome, reason, False)
        return outcome


def rollback(model: str, **kwargs) -> Outcome:
    """``previous`` -> ``live``, without swapping (see the module docstring)."""
    return promote(model, PREVIOUS, LIVE, **kwargs)


# ---------------------------------------------------------------------------- lineage


def lineage(client, model: str, alias: str) -> dict:
    """What ``model@alias`` is made of, and how it came to be there."""
    version = aliases.resolve(client, model, alias)
    mv = aliases.get_version(client, model, version)
    report: dict = {
        "model": model,
        "alias": alias,
        "version": version,
        "aliases": sorted(a for a, v in aliases.aliases_of(client, model).items() if v == version),
        "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
            timespec="seconds"
        ),
        "source": mv.source,
        "version_tags": {k: v for k, v in mv.tags.items() if not k.startswith("mlcp.gate.")},
    }
    training = None
    if mv.run_id:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):
            training = client.get_run(mv.run_id)
    runs = [training] if training is not None else []
    experiments = [e.experiment_id for e in client.search_experiments()]
    flt = (
        f"tags.`mlcp.model` = '{_quote(model)}' AND tags.`mlcp.version` = '{version}' "
        "AND tags.`mlcp.kind` = 'stage'"
    )
    seen = {r.info.run_id for r in runs}
    runs += [r for r in _search_all(client, experiments, flt) if r.info.run_id not in seen]
    report["training_run"] = (
        {
            "run_id": training.info.run_id,
            "run_name": training.info.run_name,
            "experiment_id": training.info.experiment_id,
            "params": dict(training.data.params),
            "metrics": dict(training.data.metrics),
        }
        if training is not None
        else None
    )
    datasets, prompts_used = [], []
    for run in runs:
        stage = run.data.tags.get("mlcp.stage", "")
        for item in run.inputs.dataset_inputs if run.inputs else []:
            ds = item.dataset
            context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
            try:
                source = json.loads(ds.source).get("uri", ds.source)
            except (TypeError, ValueError):
                source = ds.source
            try:
                rows = json.loads(ds.profile).get("num_rows") if ds.profile else None
            except (TypeError, ValueError, AttributeError):
                rows = None
            datasets.append(
                {
                    "stage": stage,
                    "run_id": run.info.run_id,
                    "name": ds.name,
                    "digest": ds.digest,
                    "source": source,
                    "context": context,
                    "rows": rows,
                }
            )
        for key, value in run.data.tags.items():
            if key.startswith("mlcp.prompt.") and key.endswith(".sha256"):
                prompts_used.append(
                    {
                        "stage": stage,
                        "run_id": run.info.run_id,
                        "name": key[len("mlcp.prompt.") : -len(".sha256")],
                        "sha256": value,
                    }
                )
    report["datasets"] = datasets
    report["prompts"] = prompts_used
    report["gates"] = [asdict(s) for s in gates.decisions_of(client, model, version)]
    moves = [
        r
        for r in history(client, model, alias)
        if r.to_version == version and r.status == "FINISHED" and r.action != "noop"
    ]
    report["became"] = asdict(moves[-1]) if moves else None
    return report


def run_promote(cfg: PromoteConfig) -> Outcome:
    expect_current = aliases.UNSET
    if cfg.expect_current is not None:
        expect_current = None if cfg.expect_current == NONE else cfg.expect_current
    return promote(
        cfg.model_name,
        cfg.source_alias,
        cfg.target_alias,
        expect_version=cfg.expect_version,
        expect_current=expect_current,
        require_gates=cfg.require_gates,
        force=cfg.force,
        reason=cfg.reason,
        dry_run=cfg.dry_run,
    )


def run_rollback(cfg: RollbackConfig) -> Outcome:
    return rollback(
        cfg.model_name,
        expect_version=cfg.expect_version,
        require_gates=cfg.require_gates,
        reason=cfg.reason or "rollback",
        dry_run=cfg.dry_run,
    )


PROMOTE = Stage(
    "",
    "promote",
    "point one alias at the version another alias names",
    PromoteConfig,
    run_promote,
)
ROLLBACK = Stage(
    "", "rollback", "restore the previous live version (no swap)", RollbackConfig, run_rollback
)
