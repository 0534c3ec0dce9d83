"""A model's promotion policy: the gates a promotion to ``live`` requires, kept on the
registered model itself (tag ``mlcp.policy.require_gates``), so that no caller can forget
them.

- A pipeline's training stage writes it when it first registers a model: every gate of the
  pipeline's stages (``Pipeline.gates``), the same list the pipeline templates require.
- ``mlcp promote`` to ``live`` (and the ``promote`` template) enforce it even when
  ``--require-gates`` is not given; ``--require-gates`` adds gates, it cannot remove one.
  Only ``--force --reason`` bypasses it, and the move is recorded as forced.
- A rollback (``previous`` -> ``live``) does not check again: the restored version passed
  them when it went live; the move record links the decisions it passed.
- ``mlcp policy show`` prints it; ``mlcp policy set`` changes it, and the change is itself
  a recorded run (``<pipeline>/policy``: who, why, before and after), opened before the tag
  is written and closed once it reads back.

A model registered without the tag (by hand, or before policies existed) has an empty
policy until someone sets one: ``mlcp policy show`` says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..base.errors import BadInput, RecordFailed
from ..decisions import gates
from ..records import tracking
from ..spec.contract import KIND_TAG, NO_PIPELINE, PIPELINE_TAG, REQUIRED_GATES_TAG, TAG_PREFIX
from ..spec.declare import Config, Stage, csv, option
from . import aliases

STAGE = "policy"  # the experiment <pipeline>/policy and the runs' kind
BEFORE_TAG = TAG_PREFIX + "policy.before"
AFTER_TAG = TAG_PREFIX + "policy.after"
REASON_TAG = TAG_PREFIX + "reason"


def check_gate_names(names: Iterable[str]) -> tuple[str, ...]:
    """The names in order, once each; BadInput for one that is not a gate name."""
    found = tuple(dict.fromkeys(n for n in names if n))
    for name in found:
        if not gates.NAME_RE.match(name):
            raise BadInput(f"invalid gate name {name!r}: lower-case letters, digits, - and _")
    return found


def required_gates(model_tags: Mapping[str, str]) -> tuple[str, ...]:
    """The gates a promotion to live requires, read from a registered model's tags."""
    return csv(model_tags.get(REQUIRED_GATES_TAG, ""))


def initial_tags(pipeline_gates: Iterable[str]) -> dict[str, str]:
    """What a training stage sets on a model it registers first: the pipeline's gates."""
    return {REQUIRED_GATES_TAG: ",".join(check_gate_names(pipeline_gates))}


def with_policy(policy_gates: Iterable[str], asked: Iterable[str]) -> list[str]:
    """The gates a promotion checks: the policy's, then any the caller adds (it cannot
    remove one)."""
    return list(dict.fromkeys([*policy_gates, *(g for g in asked if g)]))


# ---------------------------------------------------------------------------- the command


@dataclass(kw_only=True)
class ShowConfig(Config):
    json: bool = option(False, help="print JSON")


@dataclass(kw_only=True)
class SetConfig(Config):
    require_gates: tuple[str, ...] = option(
        help="the comma-separated gates a promotion to live requires ('' : none)",
        parse=lambda text: check_gate_names(csv(text)),
    )
    reason: str = option(help="why the policy changes (recorded with the change)")
    json: bool = option(False, help="print JSON")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.reason.strip():
            raise BadInput("policy set needs --reason TEXT: a policy change is explained")


def show(model: str, client=None) -> dict:
    client = client or tracking.registry_client()
    registered = aliases.get_model(client, model)
    tags = dict(registered.tags)
    return {
        "model": model,
        "pipeline": tags.get(PIPELINE_TAG, ""),
        "require_gates": list(required_gates(tags)),
        "set": REQUIRED_GATES_TAG in tags,
    }


def set_policy(model: str, gate_names: Iterable[str], *, reason: str, client=None) -> dict:
    """Change the policy, recorded: the run is opened before the tag is written and closed
    FINISHED once the tag reads back as written (FAILED, and RecordFailed, otherwise)."""
    client = client or tracking.registry_client()
    wanted = ",".join(check_gate_names(gate_names))
    registered = aliases.get_model(client, model)
    tags = dict(registered.tags)
    before = tags.get(REQUIRED_GATES_TAG)
    pipeline = tags.get(PIPELINE_TAG) or NO_PIPELINE
    run_tags = tracking.context_tags(pipeline, STAGE, model)
    run_tags.update(
        {
            KIND_TAG: STAGE,
            BEFORE_TAG: "unset" if before is None else before,
            AFTER_TAG: wanted,
            REASON_TAG: reason,
        }
    )
    try:
        experiment_id = tracking.ensure_experiment(
            client, tracking.experiment_name(pipeline, STAGE)
        )
        run = client.create_run(experiment_id, run_name=f"{model}-policy", tags=run_tags)
    except Exception as exc:
        raise RecordFailed(
            f"could not record the policy change, so nothing changed: {exc}"
        ) from exc
    run_id = run.info.run_id
    try:
        client.set_registered_model_tag(model, REQUIRED_GATES_TAG, wanted)
        now = client.get_registered_model(model).tags.get(REQUIRED_GATES_TAG)
        if now != wanted:
            raise RecordFailed(f"{model}'s policy reads back as {now!r}, not {wanted!r}")
    except Exception as exc:
        client.set_terminated(run_id, "FAILED")
        if isinstance(exc, RecordFailed):
            raise
        raise RecordFailed(f"could not set {model}'s policy: {exc}") from exc
    client.set_terminated(run_id, "FINISHED")
    return {**show(model, client), "before": before, "run_id": run_id}


def run_show(cfg: ShowConfig) -> dict:
    return show(cfg.model_name)


def run_set(cfg: SetConfig) -> dict:
    return set_policy(cfg.model_name, cfg.require_gates, reason=cfg.reason)


def describe(result: Mapping) -> str:
    """The policy as a line for people."""
    if not result["set"]:
        return (
            f"{result['model']}: no policy recorded: a promotion to live requires only the "
            "gates the caller names (set one with `mlcp policy set`)"
        )
    required = ", ".join(result["require_gates"]) or "no gate"
    return f"{result['model']}: a promotion to live requires {required}"


def print_result(result: dict, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if "run_id" in result:
        before = "unset" if result["before"] is None else repr(result["before"])
        print(f"{result['model']}: policy changed from {before} (recorded: {result['run_id']})")
    print(describe(result))


# ``mlcp policy show`` and ``mlcp policy set``: their words are (policy, show|set).
SHOW = Stage(
    STAGE, "show", "print the gates a promotion of a model to live requires", ShowConfig, run_show
)
SET = Stage(
    STAGE,
    "set",
    "change the gates a promotion of a model to live requires (recorded, with a reason)",
    SetConfig,
    run_set,
)
