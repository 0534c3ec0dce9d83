"""Serving converges on the registry: ``mlcp serving check`` finds drift, ``mlcp serving sync``
repairs it.

The registry is the desired state: ``live`` names the version the ``<model>-live`` slot must
serve, ``staged`` the one of ``<model>-staged`` (:data:`SLOTS`). The model's serving back end
(its ``mlcp.serving`` tag, :mod:`steps.registry.backends`) says what every replica of its
server serves on each slot. A replica that serves another version, none, or cannot be asked
is *drift*: after a restart that lost a slot, a replica added later, a load made by hand.

``check`` prints one line per replica and slot, records a run in ``<pipeline>/serving`` either
way (kind ``serving-check``), and exits 0 when everything agrees, 3 when something does not.
``sync`` loads, under the model's promotion lock, the version each alias names into its slot
on every replica, each repair recorded like any move (an ``alias-move`` record with the action
``sync`` in ``<pipeline>/promote``: opened before the load, closed after it, FAILED with the
error when it fails), so ``mlcp history`` shows who repaired what. No alias moves in either.

An alias that is unset names nothing to serve: its slot is not compared (a slot left over from
an earlier staging is not drift). A model without a serving back end is refused when named and
left out when every model is checked. Pipeline-blind: the core never imports a pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..base import rest
from ..base.environment import MLCP_ROUTER_STATS_URL
from ..base.errors import EXIT_GATE_FAILED, EXIT_OK, BadInput, MlcpError
from ..records import tracking
from ..spec.contract import (
    KIND_TAG,
    LIVE,
    NO_PIPELINE,
    PIPELINE_TAG,
    SERVING_TAG,
    STAGED,
    TAG_PREFIX,
    TRAFFIC,
    live_slot,
    show_version,
    staged_slot,
)
from ..spec.declare import Config, Stage, option
from . import aliases, moves
from . import backends as backend

STAGE = "serving"  # the experiment <pipeline>/serving and the command `mlcp serving ...`
CHECK_KIND = "serving-check"  # the kind of a check's run
SYNC_ACTION = "sync"  # the action of a repair's record
AGREES_TAG = TAG_PREFIX + "serving.agrees"  # on a check's run: true | false
DRIFT_TAG = TAG_PREFIX + "serving.drift"  # on a check's run: the lines that disagree; none
# The aliases a server carries, each with the slot that serves it.
SLOTS: tuple[tuple[str, Callable[[str], str]], ...] = ((LIVE, live_slot), (STAGED, staged_slot))


@dataclass
class Row:
    """One replica's slot against the alias it serves."""

    model: str
    alias: str
    slot: str
    replica: str
    expected: str | None  # the version the alias names; None: unset (not compared)
    served: str | None
    error: str | None = None

    @property
    def agrees(self) -> bool:
        if self.error is not None:
            return False
        return self.expected is None or self.served == self.expected

    def show(self, value: str | None) -> str:
        """A version (``v3``), or the router's weight as it is (``25% to m-staged``)."""
        if self.alias == TRAFFIC:
            return value or "nothing"
        return show_version(value)

    def line(self) -> str:
        where = f"{self.slot:<28} {self.replica:<28}"
        if self.error is not None:
            wanted = f"{self.alias}={self.show(self.expected)}"
            return f"DRIFT {where} {wanted}: unreachable: {self.error}"
        served = "nothing" if self.served is None else self.show(self.served)
        if self.expected is None:
            return f"ok    {where} {self.alias} is unset (not compared); serves {served}"
        verdict = "ok   " if self.agrees else "DRIFT"
        return f"{verdict} {where} {self.alias}={self.show(self.expected)}, serves {served}"


@dataclass(kw_only=True)
class CheckConfig(Config):
    model_name: str = option(
        "",
        help="registered model name in MLflow (empty: every model with a serving back end)",
    )
    json: bool = option(False, help="print JSON", argo=False)
    serving: str = option(
        "",
        help="only the models of these serving back ends, comma-separated (their mlcp.serving "
        "tag, e.g. triton; empty: every back end): a stack that runs only vLLM syncs only "
        "vLLM's models",
        argo=False,
    )


@dataclass(kw_only=True)
class SyncConfig(CheckConfig):
    reason: str = option("", help="why (recorded with each repair)")


def _model_and_backend(client, name: str):
    registered = aliases.get_model(client, name)
    server = backend.for_model(name, dict(registered.tags))
    return registered, server


def compare(client, model: str) -> list[Row]:
    """One row per alias of :data:`SLOTS`, slot and replica (no record written)."""
    registered, server = _model_and_backend(client, model)
    if server is None:
        raise BadInput(
            f"model {model!r} has no serving back end ({SERVING_TAG} is not set): nothing "
            "serves it, so there is nothing to compare"
        )
    current = {a: str(v) for a, v in registered.aliases.items()}
    rows = []
    for alias, slot_of in SLOTS:
        slot = slot_of(model)
        for served in server.served(model, slot):
            rows.append(
                Row(
                    model,
                    alias,
                    slot,
                    served.replica,
                    current.get(alias),
                    served.version,
                    served.error,
                )
            )
    return rows + traffic_rows(client, model)


def traffic_rows(client, model: str) -> list[Row]:
    """The router's weight for ``model`` against its last recorded weight change (none when
    the router never routed it)."""

    from . import router

    wanted = moves.recorded_weight(client, model)
    if wanted is None:
        return []
    where = MLCP_ROUTER_STATS_URL.get() or "no router configured"
    expected = f"{wanted[0]}% to {wanted[1]}"
    try:
        now = router.applied().get(model)
    except (MlcpError, ValueError) as exc:
        return [Row(model, TRAFFIC, "router", where, expected, None, str(exc))]
    served = None if now is None else f"{now[0]}% to {now[1]}"
    return [Row(model, TRAFFIC, "router", where, expected, served)]


def _pipeline(client, model: str) -> str:
    return dict(aliases.get_model(client, model).tags).get(PIPELINE_TAG, NO_PIPELINE)


def record_check(client, model: str, rows: list[Row]) -> str:
    """The check's run in ``<pipeline>/serving``: agrees or not, the lines that do not, and
    counts as metrics."""
    pipeline = _pipeline(client, model)
    experiment_id = tracking.ensure_experiment(client, tracking.experiment_name(pipeline, STAGE))
    drift = [r for r in rows if not r.agrees]
    tags = tracking.context_tags(pipeline, STAGE, model)
    tags.update(
        {
            KIND_TAG: CHECK_KIND,
            AGREES_TAG: str(not drift).lower(),
            DRIFT_TAG: ("\n".join(r.line() for r in drift) or "none")[:4000],
        }
    )
    run = client.create_run(experiment_id, run_name=f"{model}-serving-check", tags=tags)
    metric, now = rest.metric_type(client), int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[
            metric("replica_slots", float(len(rows)), now, 0),
            metric("drifted", float(len(drift)), now, 0),
        ],
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _models(client, name: str, serving: str = "") -> list[str]:
    """The model named, else every model with a serving back end (of those ``serving``
    names, comma-separated, when given)."""
    if name:
        return [name]
    found = aliases.models_tagged(client, SERVING_TAG)
    wanted = {s.strip() for s in serving.split(",") if s.strip()}
    if not wanted:
        return found
    unknown = sorted(wanted - set(backend.known()))
    if unknown:
        raise BadInput(
            f"unknown serving back end(s) {', '.join(unknown)}; choose from "
            f"{', '.join(sorted(backend.known()))}"
        )
    return [m for m in found if dict(aliases.get_model(client, m).tags)[SERVING_TAG] in wanted]


def run_check(cfg: CheckConfig) -> int:
    """``mlcp serving check``: the lines, a recorded run per model; 0 agrees, 3 drift."""
    import json

    client = tracking.registry_client()
    result = {}
    for model in _models(client, cfg.model_name, cfg.serving):
        rows = compare(client, model)
        run_id = record_check(client, model, rows)
        result[model] = {"run_id": run_id, "rows": [asdict(r) | {"agrees": r.agrees} for r in rows]}
        if not cfg.json:
            for row in rows:
                print(f"{model}: {row.line()}")
    agrees = all(r["agrees"] for m in result.values() for r in m["rows"])
    if cfg.json:
        print(json.dumps(result, indent=2))
    elif not result:
        print("no registered model has a serving back end: nothing to check")
    else:
        print(
            "serving agrees with the registry"
            if agrees
            else "serving has drifted from the registry: `mlcp serving sync` repairs it"
        )
    return EXIT_OK if agrees else EXIT_GATE_FAILED


def sync(client, model: str, reason: str = "") -> list[moves.Move]:
    """Load the version each alias names into its slot on every replica that does not serve
    it, each repair recorded; the repairs made (none when all agree)."""
    done: list[moves.Move] = []
    with moves.model_lock(model):
        registered, server = _model_and_backend(client, model)
        rows = compare(client, model)
        pipeline = dict(registered.tags).get(PIPELINE_TAG, NO_PIPELINE)
        for alias, slot_of in SLOTS:
            slot = slot_of(model)
            wrong = [r for r in rows if r.slot == slot and not r.agrees]
            if not wrong or wrong[0].expected is None:
                continue
            version = wrong[0].expected
            before = next((r.served for r in wrong if r.served), None)
            move = moves.Move(alias, before, version, SYNC_ACTION)
            why = "; ".join(
                f"{r.replica} "
                + (
                    f"unreachable: {r.error}"
                    if r.error
                    else f"served {'nothing' if r.served is None else show_version(r.served)}"
                )
                for r in wrong
            )
            moves.record_serving(
                client,
                model,
                pipeline,
                move,
                reason=(reason + ": " if reason else "") + f"serving sync of {slot} ({why})",
                load=lambda v=version, s=slot: server.load_live(client, model, v, s),
            )
            done.append(move)
        if any(r.alias == TRAFFIC and not r.agrees for r in rows):
            done.append(_sync_traffic(client, model, server, reason))
    return done


def _sync_traffic(client, model: str, server, reason: str) -> moves.Move:
    """Write the last recorded weight back to the router (recorded, action sync)."""
    from . import router

    weight, slot = moves.recorded_weight(client, model)
    route = router.store().read().get(model) or moves.route_for(model, server, slot)
    route = router.Route(**{**route.__dict__, "canary_slot": slot})
    moves.shift(
        client,
        model,
        route,
        weight,
        reason=(reason + ": " if reason else "") + "serving sync of the router",
        champion=None,
        challenger=None,
        action=SYNC_ACTION,
        locked=True,
    )
    return moves.Move(TRAFFIC, None, None, SYNC_ACTION)


def run_sync(cfg: SyncConfig) -> int:
    """``mlcp serving sync``: repair every drifted slot; 0 once all agree."""
    import json

    client = tracking.registry_client()
    repaired: dict[str, list[dict]] = {}
    failures = []
    for model in _models(client, cfg.model_name, cfg.serving):
        try:
            repaired[model] = [asdict(m) for m in sync(client, model, cfg.reason)]
        except MlcpError as exc:
            if cfg.model_name:
                raise
            failures.append(f"{model}: {exc}")  # one model's failure stops no other's repair
    if cfg.json:
        print(json.dumps({"repaired": repaired, "failed": failures}, indent=2))
    else:
        for model, done in repaired.items():
            if not done:
                print(f"{model}: serving already agrees with the registry")
            for move in done:
                if move["alias"] == TRAFFIC:
                    print(f"{model}: the router's weight is the recorded one again")
                    continue
                print(
                    f"{model}: {move['alias']} slot now serves {show_version(move['to_version'])} "
                    f"on every replica (was {show_version(move['from_version'])})"
                )
    if failures:
        raise MlcpError("serving sync failed for " + "; ".join(failures))
    return EXIT_OK


CHECK = Stage(
    STAGE,
    "check",
    "compare what every replica serves with the registry's live and staged (exit 0 agree, 3 drift)",
    CheckConfig,
    run_check,
    title="Check that serving agrees with the registry",
    description=(
        "Compares, for each model with a serving back end (or the one named), the version live "
        "and staged name with what every replica of its server serves; records a run in "
        "<pipeline>/serving and fails (exit 3) on drift. Moves nothing."
    ),
)
SYNC = Stage(
    STAGE,
    "sync",
    "load the versions live and staged name into their slots on every replica that drifted "
    "(recorded like any move)",
    SyncConfig,
    run_sync,
    title="Make serving agree with the registry",
    description=(
        "Loads the version live (and staged) names into its slot on every replica that serves "
        "another or none, under the model's promotion lock; each repair is recorded in "
        "<pipeline>/promote (action sync). No alias moves."
    ),
)
