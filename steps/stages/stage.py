"""The skeleton every stage shares, so that a stage only computes its metrics and declares
its gate checks.

- :func:`say`: the ``[cv train] message`` progress lines on stderr;
- :func:`resolve_input`: the version the stage's input alias names, and its tags;
- :func:`data_source`: the data set a stage reads (``--data``, else the version's own);
- :class:`Reporter`, bound to one pipeline and stage: prints (``report("...")``), opens the
  stage's run (:meth:`~Reporter.stage_run`), records, prints and enforces the gate checks
  (:meth:`~Reporter.judge`; the gates passed go into the version's description), and
  writes the output alias (:meth:`~Reporter.advance`).

Core side: it never imports a pipeline or a serving engine, and nothing heavy at import
time (MLflow is imported inside the functions of the modules it calls).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..base import outputs
from ..base.errors import BadInput
from ..decisions import gates
from ..records import tracking
from ..registry import aliases, describe, moves
from ..spec.contract import DATA_SOURCE_TAG, LIVE, show_version

Check = gates.Check


def say(*where: str) -> Callable[[str], None]:
    """A printer of progress lines ``[<where...>] message`` on stderr, flushed at once:
    ``say("cv", "train")("epoch 2/2")`` prints ``[cv train] epoch 2/2``."""
    prefix = f"[{' '.join(where)}]"

    def print_line(message: str) -> None:
        print(f"{prefix} {message}", file=sys.stderr, flush=True)

    return print_line


class Input(NamedTuple):
    client: Any  # the MlflowClient it was read with
    version: str
    tags: dict[str, str]  # the version's tags


def resolve_input(model: str, alias: str) -> Input:
    """The version ``model@alias`` names, and its tags (BadInput when there is none)."""
    client = tracking.client()
    version = aliases.resolve(client, model, alias)
    return Input(client, version, dict(aliases.get_version(client, model, version).tags))


class Champion(NamedTuple):
    """What a challenger is compared with side by side: the version the champion alias names,
    or no version and the reason there is none."""

    alias: str
    version: str | None
    missing: str | None = None  # why there is nothing to compare with


def resolve_champion(client, model: str, alias: str, challenger: str) -> Champion:
    """The version ``model@alias`` names (the champion). When the alias is unset (the first
    version) or names the challenger itself, there is nothing to compare with: the stage
    then judges the absolute gates only, and its champion gates record why."""
    current = aliases.aliases_of(client, model).get(alias)
    if current is None:
        return Champion(alias, None, f"no champion: {model}@{alias} is unset")
    if str(current) == str(challenger):
        return Champion(alias, None, f"the challenger v{challenger} is the champion itself")
    return Champion(alias, str(current))


def champion_slot_fix(model: str, champion: Champion) -> str:
    """What to do when the live slot does not serve the champion: the end of the error."""
    fix = (
        f"a no-op promotion reloads it: `mlcp promote --model-name {model} --source-alias "
        f"{LIVE} --target-alias {LIVE}`"
        if champion.alias == LIVE
        else f"the champion is measured through the {LIVE} slot, which must serve it (promote "
        f"it to {LIVE}, or name the alias of the version {LIVE} serves)"
    )
    return f"{model}@{champion.alias} names {show_version(champion.version)}; {fix}"


def data_source(model: str, version: str, tags: Mapping[str, str], given: str | None = None) -> str:
    """The data set a stage reads: ``given`` (its ``--data``), else the one the version was
    trained on (its ``mlcp.data.source`` tag); BadInput when neither names one."""
    uri = given or tags.get(DATA_SOURCE_TAG)
    if not uri:
        raise BadInput(
            f"{model} v{version} names no data set: it has no {DATA_SOURCE_TAG} tag (was it "
            "trained by an `mlcp <pipeline> train` stage?)"
        )
    return uri


@dataclass(frozen=True)
class Reporter:
    """One stage's printer and recorder: ``Reporter("cv", "perf-test")``."""

    pipeline: str
    stage: str

    def __call__(self, message: str) -> None:
        say(self.pipeline, self.stage)(message)

    def stage_run(
        self,
        model: str,
        name: str,
        *,
        version: str | int | None = None,
        params: Mapping[str, Any] | None = None,
        system_metrics: bool = False,
    ):
        """:func:`tracking.stage_run` in this stage's experiment (a context manager). System
        metrics are sampled only when asked: a training stage computes here, the others wait
        on a server."""
        return tracking.stage_run(
            self.pipeline,
            self.stage,
            model,
            name,
            version=version,
            params=params,
            system_metrics=system_metrics,
        )

    def judge(
        self,
        checks: Iterable[Check],
        *,
        model: str,
        version: str | int,
        evidence: Mapping | None = None,
    ) -> list[gates.Decision]:
        """Record every ``(gate, value)`` check (:func:`gates.evaluate_all`), print each
        decision as ``gate NAME: verdict (reasons)``, then enforce them all: GateFailed
        (exit 3) naming every failed gate. Returns the decisions when all passed."""
        decisions = gates.evaluate_all(
            checks,
            model=model,
            version=version,
            pipeline=self.pipeline,
            stage=self.stage,
            evidence=evidence,
        )
        for d in decisions:
            self(f"gate {d.gate.name}: {d.verdict} ({'; '.join(d.reasons)})")
            # what the template's gate metrics read (workflows/metrics.py), pass or fail
            outputs.write(outputs.gate_files(d.gate.name, d.value, d.passed))
        gates.enforce(decisions)
        # the version's description says which gates it passed, and where
        # (steps/registry/describe.py)
        line = describe.passed(self.command, decisions)
        describe.describe_version(tracking.client(), model, version, line, first=False)
        return decisions

    @property
    def command(self) -> str:
        """``mlcp cv train``: what ran, as the descriptions and logs name it."""
        return f"mlcp {self.pipeline} {self.stage}"

    def describe_trained(
        self, client, model: str, version: str | int, read, metric: str, value: float
    ) -> None:
        """Start the description of the version this training stage registered: the data it
        read (a :class:`~steps.records.lineage.DataRead`) and its headline ``metric``."""
        line = describe.trained(self.command, read.digest, read.uri, metric, value)
        describe.describe_version(client, model, version, line, first=True)

    def advance(
        self, model: str, alias: str, version: str | int, *, reason: str, client=None
    ) -> moves.Outcome:
        """Point the stage's output ``alias`` at ``version`` (a recorded move, see
        :func:`moves.assign`) and print ``model@alias -> vN``."""
        outcome = moves.assign(model, alias, version, reason=reason, client=client)
        self(f"{model}@{alias} -> {show_version(version)}")
        return outcome
