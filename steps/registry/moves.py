"""Moving aliases, with their records and their lock: the one way an alias changes.

Every alias move is an MLflow run in ``<pipeline>/promote`` (``mlcp.kind=alias-move``) with
the model, alias, from- and to-version, action, reason, actor, Argo workflow and the gate
runs relied on. The record is opened *before* the alias is written and closed after the
write was verified, so a move is never unrecorded: a record left RUNNING marks a move whose
outcome was never confirmed, and ``history`` shows it as such. Those records are also the
history that rollback replays (:func:`live_stack`).

Moving ``live`` moves traffic first: the model's serving back end (its ``mlcp.serving``
tag, looked up by name in :mod:`steps.registry.backends`) loads the version into the live slot,
and only then do the aliases move. This module never imports a pipeline.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..base import rest, settings
from ..base.errors import BadInput, ConcurrentChange, MlcpError, RecordFailed
from ..records import tracking
from ..spec.contract import (
    ACTOR_TAG,
    ARGO_TAG_PREFIX,
    KIND_TAG,
    LIVE,
    MODEL_TAG,
    NO_PIPELINE,
    NO_VERSION,
    PIPELINE_TAG,
    PREVIOUS,
    ROLLED_BACK_TAG,
    TAG_PREFIX,
    TRAFFIC,
    WEIGHT_FROM_TAG,
    WEIGHT_SLOT_TAG,
    WEIGHT_TO_TAG,
    live_slot,
    previous_slot,
    show_version,
)
from . import aliases, router
from . import backends as backend

LOCK_TIMEOUT_S = 120.0


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
        start = show_version(self.from_version)
        return f"{self.alias}: {start} -> v{self.to_version} ({self.action})"


@dataclass
class Outcome:
    model: str
    version: str
    moves: list[Move]
    record_run_ids: list[str] = field(default_factory=list)
    gate_runs: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def action(self) -> str:
        """``promote`` or ``rollback`` when the requested alias moved; ``none`` for a no-op or
        a dry run (what the promote template's alias-move metric counts)."""
        if self.dry_run:
            return "none"
        moved = [m.action for m in self.moves if m.action in ("promote", "rollback")]
        return moved[0] if moved else "none"

    def to_dict(self) -> dict:
        return {**asdict(self), "action": self.action}


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


def _record_tag(field: str) -> str:
    """The tag of an alias-move record that holds ``field`` (``mlcp.<field>``)."""
    return TAG_PREFIX + field


def _stored(version: str | None) -> str:
    """A version as a record stores it (an unset alias is ``none``)."""
    return NO_VERSION if version is None else str(version)


def _open_record(
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
    extra: Mapping[str, str] | None = None,
):
    """The call that opens the record of ``move`` (a function of a client returning the
    run id); its tags, sequence number included, are fixed now, in the order of the moves."""
    tags = tracking.context_tags(pipeline, "promote", model, move.to_version)
    tags.update(
        {
            KIND_TAG: "alias-move",
            _record_tag("alias"): move.alias,
            _record_tag("from_version"): _stored(move.from_version),
            _record_tag("to_version"): _stored(move.to_version),
            _record_tag("action"): move.action,
            _record_tag("source_alias"): source_alias,
            _record_tag("reason"): reason or "",
            _record_tag("forced"): str(bool(forced)).lower(),
            _record_tag("gate_runs"): ",".join(gate_runs),
            _record_tag("operation"): operation,
            _record_tag("seq"): str(time.time_ns()),
            **(extra or {}),
        }
    )
    name = f"{model}-{move.alias}-{_stored(move.from_version)}-to-{_stored(move.to_version)}"
    if move.action != "promote":
        name += f"-{move.action}"
    params = {
        "model": model,
        "alias": move.alias,
        "from_version": _stored(move.from_version),
        "to_version": _stored(move.to_version),
        "action": move.action,
    }

    def send(client) -> str:
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        param = rest.param_type(client)
        client.log_batch(run.info.run_id, params=[param(k, v) for k, v in params.items()])
        return run.info.run_id

    return send


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
    status: str  # FINISHED = confirmed, FAILED = refused and not applied, RUNNING = unconfirmed
    error: str = ""  # why a FAILED move was refused (the server could not load it, ...)
    # a weight change at the router (alias ``traffic``, action ``shift``): percents as text
    from_weight: str = ""
    to_weight: str = ""
    weight_slot: str = ""

    @classmethod
    def from_run(cls, run) -> Record:
        tags = run.data.tags

        def version(key: str) -> str | None:
            value = tags.get(key, NO_VERSION)
            return None if value == NO_VERSION else value

        return cls(
            run_id=run.info.run_id,
            time=datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(
                timespec="seconds"
            ),
            seq=int(tags.get(_record_tag("seq"), run.info.start_time * 1_000_000)),
            model=tags.get(MODEL_TAG, ""),
            alias=tags.get(_record_tag("alias"), ""),
            from_version=version(_record_tag("from_version")),
            to_version=version(_record_tag("to_version")),
            action=tags.get(_record_tag("action"), ""),
            reason=tags.get(_record_tag("reason"), ""),
            actor=tags.get(ACTOR_TAG, ""),
            forced=tags.get(_record_tag("forced")) == "true",
            source_alias=tags.get(_record_tag("source_alias"), ""),
            gate_runs=[r for r in tags.get(_record_tag("gate_runs"), "").split(",") if r],
            workflow_name=tags.get(ARGO_TAG_PREFIX + "workflow_name", ""),
            workflow_uid=tags.get(ARGO_TAG_PREFIX + "workflow_uid", ""),
            status=run.info.status,
            error=tags.get(_record_tag("error"), ""),
            from_weight=tags.get(_record_tag("weight.from"), ""),
            to_weight=tags.get(_record_tag("weight.to"), ""),
            weight_slot=tags.get(_record_tag("weight.slot"), ""),
        )


def search_all(client, experiment_ids: list[str], flt: str) -> list:
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
    """Every recorded move of ``model``'s aliases, oldest first: confirmed ones (FINISHED),
    refused ones that changed nothing (FAILED, with the error: a server that could not load
    the version, say) and RUNNING ones, whose outcome was never confirmed. Whatever replays
    the history (:func:`live_stack`, lineage) reads the confirmed ones only."""
    experiments = client.search_experiments(filter_string="name LIKE '%/promote'")
    if not experiments:
        return []
    flt = f"tags.`mlcp.kind` = 'alias-move' AND tags.`mlcp.model` = '{quote(model)}'"
    if alias:
        flt += f" AND tags.`mlcp.alias` = '{quote(alias)}'"
    runs = search_all(client, [e.experiment_id for e in experiments], flt)
    return sorted((Record.from_run(r) for r in runs), key=lambda r: r.seq)


def quote(text: str) -> str:
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


def apply(
    client,
    model,
    pipeline,
    source_alias,
    outcome: Outcome,
    reason,
    force,
    model_tags: Mapping[str, str] | None = None,
) -> None:
    """Record, then write, the outcome's moves. ``model_tags`` (the registered model's
    tags) name its serving back end: when ``live`` moves, that back end loads the version
    into the live slot first, and if it cannot, the records are closed FAILED and no alias
    moves."""
    operation = uuid.uuid4().hex
    try:
        experiment_id = tracking.ensure_experiment(
            client, tracking.experiment_name(pipeline, "promote")
        )
        run_ids = rest.each(  # the records of one operation, opened side by side
            client,
            [
                _open_record(
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
            ],
        )
    except Exception as exc:
        raise RecordFailed(f"could not record the move, so nothing was moved: {exc}") from exc
    outcome.record_run_ids = run_ids
    settings.test_hook_pause_after_record()  # test hook: a no-op unless a crash test sets it
    live_move = next((m for m in outcome.moves if m.alias == LIVE), None)
    server = None
    if live_move is not None and live_move.to_version is not None:
        try:  # traffic first: the alias moves only once the server serves the version
            server = backend.for_model(model, model_tags or {})
            if server is not None:
                # a routed model: the router must answer, and a warm version is flipped to
                with flipped(client, server, model, live_move):
                    server.load_live(client, model, str(live_move.to_version))
        except Exception as exc:
            for run_id in run_ids:
                with contextlib.suppress(Exception):
                    client.set_tag(run_id, _record_tag("error"), str(exc)[:4000])
                    client.set_terminated(run_id, "FAILED")
            raise
    done = 0
    read_back = None  # each write's compare-and-set reads what the previous one read back
    try:
        for move, run_id in zip(outcome.moves, run_ids, strict=True):
            if move.action == "noop":
                pass
            elif move.to_version is None:
                read_back = aliases.delete_alias(
                    client, model, move.alias, expect_current=move.from_version, current=read_back
                )
            else:
                read_back = aliases.set_alias(
                    client,
                    model,
                    move.alias,
                    move.to_version,
                    expect_current=move.from_version,
                    known=True,
                    current=read_back,
                )
            client.set_terminated(run_id, "FINISHED")
            done += 1
    except Exception as exc:
        for run_id in run_ids[done:]:
            with contextlib.suppress(Exception):
                client.set_tag(run_id, _record_tag("error"), str(exc)[:4000])
                client.set_terminated(run_id, "FAILED")
        moved_live = any(m.alias == LIVE for m in outcome.moves[:done])
        if server is not None and not moved_live and live_move.from_version is not None:
            # the slot already serves the new version but live still names the old one: put
            # the old one back (best effort: `mlcp serving check` finds it if this fails too)
            with contextlib.suppress(Exception):
                server.load_live(client, model, str(live_move.from_version))
        raise
    rolled = next((m for m in outcome.moves if m.action == "rollback"), None)
    if rolled is not None and rolled.from_version is not None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        tags = {
            ROLLED_BACK_TAG: "true",
            f"{ROLLED_BACK_TAG}_at": stamp,
            f"{ROLLED_BACK_TAG}_to": str(rolled.to_version),
            f"{ROLLED_BACK_TAG}_run": run_ids[0],
        }
        rest.each(  # MLflow sets a version's tags one per request: side by side
            client,
            [
                lambda c, k=key, v=value: c.set_model_version_tag(model, rolled.from_version, k, v)
                for key, value in tags.items()
            ],
        )


def record_serving(
    client,
    model: str,
    pipeline: str,
    move: Move,
    *,
    reason: str,
    load: Callable[[], None],
    extra: Mapping[str, str] | None = None,
) -> str:
    """A change of what a serving slot serves that moves no alias (``mlcp serving sync``),
    recorded like a move: the record opened before ``load()`` runs, closed FINISHED after it
    returned, FAILED with its error when it raised (and the error raised again). The caller
    holds :func:`model_lock`. Returns the record's run id."""
    try:
        experiment_id = tracking.ensure_experiment(
            client, tracking.experiment_name(pipeline, "promote")
        )
        run_id = _open_record(
            experiment_id,
            model,
            move,
            operation=uuid.uuid4().hex,
            reason=reason,
            source_alias=move.alias,
            gate_runs=(),
            forced=False,
            pipeline=pipeline,
            extra=extra,
        )(client)
    except Exception as exc:
        raise RecordFailed(f"could not record the change, so nothing was changed: {exc}") from exc
    try:
        load()
    except Exception as exc:
        with contextlib.suppress(Exception):
            client.set_tag(run_id, _record_tag("error"), str(exc)[:4000])
            client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def assign(model: str, alias: str, version: str | int, *, reason: str = "", client=None) -> Outcome:
    """A stage writes its output alias for the version it produced, recorded like any move.
    ``live`` and ``previous`` move only through :func:`promote` and :func:`rollback`."""
    aliases.check_alias_name(alias)
    if alias in (LIVE, PREVIOUS):
        raise BadInput(f"{alias!r} moves only through `mlcp promote` / `mlcp rollback`")
    client = client or tracking.registry_client()
    version = str(version)
    with model_lock(model):
        aliases.get_version(client, model, version)
        registered = aliases.get_model(client, model)
        now = registered.aliases.get(alias)
        now = None if now is None else str(now)
        pipeline = registered.tags.get(PIPELINE_TAG, NO_PIPELINE)
        action = "noop" if now == version else "assign"
        outcome = Outcome(model, version, [Move(alias, now, version, action)])
        apply(client, model, pipeline, f"version {version}", outcome, reason, False)
        return outcome


# ---------------------------------------------------------------------------- traffic at the router

SHIFT = "shift"  # the action of a weight change at the router (alias TRAFFIC)
# the action of a rollout held after a passed step (the weight stays, from and to the same):
# the next rollout of the same versions goes on from there (steps/stages/rollout.py)
HOLD = "hold"


def _pipeline(client, model: str) -> str:
    return dict(aliases.get_model(client, model).tags).get(PIPELINE_TAG, NO_PIPELINE)


def shift(
    client,
    model: str,
    route: router.Route,
    weight: int,
    *,
    reason: str,
    champion: str | None,
    challenger: str | None,
    action: str = SHIFT,
    locked: bool = False,
) -> float:
    """Set ``model``'s weight at the router, recorded (an ``alias-move`` run of the alias
    ``traffic``, action ``shift``) before the files change and closed once the router
    reports it; the seconds the router took to report it. MlcpError (exit 1) when the router
    is not ready: nothing is written then."""
    if not router.ready():
        raise MlcpError(
            f"the router does not answer at {router.stats_url()}: no weight of {model} was "
            "changed (start it: `mlcp stack up --services ...,router`)"
        )
    store = router.store()
    with contextlib.nullcontext() if locked else model_lock(model):  # held by promote
        routes = store.read()
        before = routes.get(model)
        start = before.weight if before else 0
        new = router.Route(**{**route.__dict__, "weight": router.check_weight(weight)})
        routes[model] = new
        took: list[float] = []

        def apply() -> None:
            store.write(routes)
            took.append(router.wait_applied({model: new}))

        record_serving(
            client,
            model,
            _pipeline(client, model),
            Move(TRAFFIC, champion, challenger, action),
            reason=f"{start}% -> {weight}% to {new.canary_slot}"
            + (f": {reason}" if reason else ""),
            load=apply,
            extra={
                WEIGHT_FROM_TAG: str(start),
                WEIGHT_TO_TAG: str(weight),
                WEIGHT_SLOT_TAG: new.canary_slot,
            },
        )
    return took[0]


def last_weight_record(client, model: str) -> Record | None:
    """The record of the last confirmed weight change of ``model`` (a shift, a sync or a
    hold; None: the router never routed it)."""
    last = [r for r in history(client, model, TRAFFIC) if r.status == "FINISHED" and r.to_weight]
    return last[-1] if last else None


def recorded_weight(client, model: str) -> tuple[int, str] | None:
    """The weight and slot the last confirmed weight change of ``model`` set (None: the
    router never routed it)."""
    last = last_weight_record(client, model)
    return None if last is None else (int(last.to_weight), last.weight_slot)


def route_for(model: str, server, canary_slot: str, weight: int = 0) -> router.Route:
    """The model's route at the router through its serving back end (BadInput when the
    back end cannot be routed)."""
    protocol = getattr(server, "router_protocol", None)
    upstreams = getattr(server, "router_upstreams", None)
    if protocol is None or upstreams is None:
        raise BadInput(
            f"the serving back end {server.name!r} of {model} says nothing of a router "
            "(router_protocol, router_upstreams): its traffic cannot be split"
        )
    return router.Route(model, protocol, list(upstreams()), live_slot(model), canary_slot, weight)


def served_by_all(server, model: str, slot: str, version: str) -> str | None:
    """Why ``slot`` does not serve ``version`` on every replica (None when it does)."""
    for served in server.served(model, slot):
        if served.error:
            return f"{served.replica} cannot be asked: {served.error}"
        if served.version != version:
            return f"{served.replica} serves {show_version(served.version)} on {slot}"
    return None


def routed(model: str) -> router.Route | None:
    """The model's route at the router, when a router is configured and routes it."""
    try:
        return router.store().read().get(model)
    except MlcpError:
        return None


def flip_ready(server, model: str, version: str) -> router.Route | None:
    """The model's route when its previous slot serves ``version`` on every replica (a flip
    can restore it at once), else None."""
    route = routed(model)
    if route is None or served_by_all(server, model, previous_slot(model), version):
        return None
    return route


@contextlib.contextmanager
def flipped(client, server, model: str, move) -> Iterator[None]:
    """Around the reload of a routed model's live slot (:func:`apply`): refuse when the
    router is down (MlcpError: nothing moves); when the model's previous slot already serves
    the version going live (a rollback after a rollout), send it all the traffic first, so
    clients get it at once, then back to the reloaded live slot. A model the router does not
    route is left alone."""
    route = routed(model)
    if route is None:
        yield
        return
    if not router.ready():
        raise MlcpError(
            f"the router that routes {model} does not answer at {router.stats_url()}: "
            "nothing was moved"
        )
    version = str(move.to_version)
    if served_by_all(server, model, previous_slot(model), version):
        yield  # nothing warm to flip to: the reload alone
        return
    warm = router.Route(**{**route.__dict__, "canary_slot": previous_slot(model)})
    common = {"champion": move.from_version, "challenger": version}
    common = {**common, "locked": True}
    took = shift(client, model, warm, 100, reason=f"flip to the warm v{version}", **common)
    print(f"[serving] {model}: flipped to {previous_slot(model)} in {took:.2f} s", file=sys.stderr)
    try:
        yield
    finally:
        shift(client, model, warm, 0, reason=f"{live_slot(model)} serves v{version}", **common)
