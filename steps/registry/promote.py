"""Promote and rollback: planning the moves of ``live`` (and any alias) and checking gates.

Rollback (``previous`` -> ``live``) does not swap: the history of ``live`` is replayed as a
stack (a promotion pushes, a rollback pops), so after rolling back from v5 to v4,
``previous`` names the version that was live before v4, and v5 is tagged as rolled back.
The moves themselves, their records and the lock are :mod:`steps.registry.moves`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..base import outputs
from ..base.errors import BadInput, GateFailed
from ..decisions import gates
from ..records import tracking
from ..spec.contract import (
    CHAIN,
    DRIFT_DETECTED,
    LIVE,
    NO_PIPELINE,
    NO_VERSION,
    PIPELINE_TAG,
    PREVIOUS,
    show_version,
)
from ..spec.declare import Config, Stage, alias_name, option
from . import aliases, policy
from .moves import Move, Outcome, apply, history, live_stack, model_lock


def version_number(text: str) -> str | None:
    """A version flag's text: empty is "not given", ``none`` is "unset", else a number."""
    if text == "":  # an Argo parameter left empty means "not given"
        return None
    if text.lower() == NO_VERSION:
        return NO_VERSION
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"not a model version number: {text!r}")
    return str(int(text))


@dataclass(kw_only=True)
class PromoteConfig(Config):
    source_alias: str = option(
        help="alias naming the version to promote (previous for a rollback)",
        parse=alias_name,
        enum=CHAIN,
    )
    target_alias: str = option(
        help="alias to move to that version (live keeps the old live as previous)",
        parse=alias_name,
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
class RollbackConfig(Config):
    expect_version: str | None = option(
        None, help="refuse unless previous names this version (empty: any)", parse=version_number
    )
    require_gates: tuple[str, ...] = option(
        (), help="comma-separated gates the restored version must have passed (empty: none)"
    )
    reason: str = option("rollback", help="why; recorded with the move")
    dry_run: bool = option(False, help="show the moves, change nothing")
    json: bool = option(False, help="print the outcome as JSON", argo=False)


# ---------------------------------------------------------------------------- promote


def _check_gates(
    client, model: str, version: str, required: list[str], by_policy: Iterable[str] = ()
) -> list[str]:
    """Return the passing decision runs for ``required``; GateFailed naming what is missing
    (and which of it the model's policy requires)."""
    statuses = gates.recorded(client, model, version, required)
    missing = [s for s in statuses if s.verdict != gates.PASS]
    if missing:
        detail = ", ".join(f"{s.name} ({s.verdict or 'no decision recorded'})" for s in missing)
        from_policy = [s.name for s in missing if s.name in set(by_policy)]
        why = (
            f" ({', '.join(from_policy)} required by the model's policy: mlcp policy show "
            f"--model-name {model})"
            if from_policy
            else ""
        )
        raise GateFailed(
            f"{model} v{version} lacks a passing decision for the required gate(s): {detail}"
            f"{why}; use --force --reason TEXT to override",
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
            f"(live is {show_version(live)}); nothing was changed"
        )
    version = aliases.resolve(client, model, source_alias, current)
    if expect_version is not None and str(expect_version) != version:
        raise BadInput(
            f"{model}@{source_alias} is v{version}, not the expected v{expect_version}; "
            "nothing was changed"
        )
    target_now = current.get(target_alias)
    if expect_current is not aliases.UNSET:
        wanted = None if expect_current in (None, NO_VERSION) else str(expect_current)
        if target_now != wanted:
            raise BadInput(
                f"{model}@{target_alias} is {show_version(target_now)}, expected "
                f"{show_version(wanted)}; "
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
    if target_alias == LIVE and DRIFT_DETECTED in current:  # the new live answers the drift
        moves.append(Move(DRIFT_DETECTED, current[DRIFT_DETECTED], None, "remove"))
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
    client = client or tracking.registry_client()
    with model_lock(model):
        version, moves, model_tags = plan(
            client,
            model,
            source_alias,
            target_alias,
            expect_version=expect_version,
            expect_current=expect_current,
        )
        # the template's metrics label this step with the model's pipeline, refused or not
        outputs.write({outputs.PIPELINE: model_tags.get(PIPELINE_TAG) or outputs.UNKNOWN_PIPELINE})
        is_noop = moves[0].action == "noop"
        is_rollback = source_alias == PREVIOUS and target_alias == LIVE
        by_policy = policy.required_gates(model_tags) if target_alias == LIVE else ()
        if not is_rollback:  # the policy's gates, then any the caller adds
            required = policy.with_policy(by_policy, required)
        gate_runs: list[str] = []
        if required and not is_noop:
            try:
                gate_runs = _check_gates(client, model, version, required, by_policy)
            except GateFailed:
                if not force:
                    raise
        elif is_rollback and by_policy and not is_noop:
            # not checked again (the version passed them when it went live): linked
            gate_runs = [
                g.run_id
                for g in gates.recorded(client, model, version, by_policy)
                if g.verdict == gates.PASS and g.run_id
            ]
        outcome = Outcome(
            model,
            version,
            moves,
            gate_runs=gate_runs,
            dry_run=dry_run,
        )
        if dry_run:
            return outcome
        apply(
            client,
            model,
            model_tags.get(PIPELINE_TAG, NO_PIPELINE),
            source_alias,
            outcome,
            reason,
            force,
            model_tags=model_tags,
        )
        return outcome


def rollback(model: str, **kwargs) -> Outcome:
    """``previous`` -> ``live``, without swapping (see the module docstring)."""
    return promote(model, PREVIOUS, LIVE, **kwargs)


def run_promote(cfg: PromoteConfig) -> Outcome:
    expect_current = aliases.UNSET
    if cfg.expect_current is not None:
        expect_current = None if cfg.expect_current == NO_VERSION else cfg.expect_current
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
