"""``mlcp <pipeline> rollout``: move live traffic to the challenger in steps, each judged on
the live traffic it saw, then promote; or set the weight back to 0 and exit 3.

It sits between perf-test and promote: it reads the challenger from ``benchmarked`` (served
by the ``<model>-staged`` slot, where deploy loaded it) and takes ``live`` as the champion
(the ``<model>-live`` slot). At each weight of ``--steps`` (default 5, 25, 50, 100 percent) the
router (steps/registry/router.py) sends that share of the model's requests to the challenger's slot;
after ``--step-duration`` seconds the step is judged on the requests of that step alone, from
the router's per-slot statistics, with the statistics the paired gates use
(steps/decisions/paired.py):

- ``rollout-traffic``: each side answered at least ``--min-requests`` requests in the step
  (fewer: the step cannot be judged, and fails);
- ``rollout-errors``: the lower end of the 95% interval of the error-rate difference
  (challenger - champion; a request whose answer is not 2xx is an error) is at most
  ``--max-error-increase``;
- ``rollout-p95``: the lower end of the interval of the p95 latency ratio (challenger /
  champion) is at most ``--max-p95-ratio``, as perf-test's ``p95-vs-champion``.

Each step is one decision run per gate (evidence: the step, its weight, the counts). A
failing step sets the weight back to 0 and exits 3; ``live`` does not move. When every step
passed, the promote path moves ``live`` (its gates, records and serving reload: the live slot
is reloaded while the challenger's slot carries all the traffic), then the weight returns to
0: the live slot now serves the new version.

Every weight change is recorded like an alias move (action ``shift``, in
``<pipeline>/promote``, with the weights from and to, the slot and the reason), opened before
the router's files change and closed once the router reports the new weights; ``mlcp
history`` shows them. ``mlcp serving check`` compares the router with the last recorded
shift of each routed model, and ``mlcp serving sync`` writes it back.

A rollout can stop between steps and leave the weight where it is: ``--until W`` holds
once the step at W passed (``--until next``: after the next step, but the last), recorded as
a weight change from W to W (action ``hold``), and exits 0 without promoting. The records
then say W, so ``mlcp serving check`` sees no drift. The next rollout of the same champion
and challenger goes on after the held step (its ``--steps`` must hold W); ``--abort`` ends
a held rollout instead (weight back to 0, recorded). That is the manual approval: in Argo,
the template's ``approval=true`` runs the stage with ``--until next`` again and again,
with a ``suspend`` step between the runs (``argo resume`` continues); locally ``--approve``
asks on the terminal before each step after the first (y: go on, h: hold, else weight 0,
exit 3). At 100% the champion's sample is the step before's; a rollout resumed right before
its 100% step first watches the held weight for one step duration to take that sample.

Rollback by flip: :func:`flip_ready` and :func:`flip` send all of a model's traffic to a slot
that already serves the restored version (``<model>-previous``, kept warm by a promotion
through the router), before the live slot is reloaded (steps/registry/moves.py).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass

from ..base import outputs
from ..base.errors import BadInput, GateFailed, MlcpError
from ..decisions import paired
from ..records import tracking
from ..registry import aliases, moves, router
from ..spec.contract import BENCHMARKED, LIVE, live_slot, previous_slot, show_version, staged_slot
from ..spec.declare import Config, Stage, alias_name, alias_option, option

TRAFFIC_GATE = "rollout-traffic"
ERRORS_GATE = "rollout-errors"
P95_GATE = "rollout-p95"
GATES = (TRAFFIC_GATE, ERRORS_GATE, P95_GATE)
RATE_DIFFERENCE = "BCa bootstrap of the rate difference (independent samples)"


def parse_steps(text: str) -> str:
    """The ``--steps`` text, checked: increasing whole percents from 1 to 100."""
    try:
        weights = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--steps is comma-separated whole percents, got {text!r}") from None
    if not weights:
        raise ValueError("--steps names no weight")
    if any(not 1 <= w <= 100 for w in weights):
        raise ValueError(f"every step is a percent from 1 to 100, got {text!r}")
    if any(b <= a for a, b in zip(weights, weights[1:], strict=False)):
        raise ValueError(f"the steps must increase, got {text!r}")
    return ",".join(str(w) for w in weights)


def _checked_steps(text: str) -> str:
    try:
        return parse_steps(text)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


NEXT = "next"  # --until next: hold after the next step (what Argo's approval loop runs)


def parse_until(text: str) -> str:
    """The ``--until`` text: empty (every step), ``next``, or a whole percent."""
    text = text.strip().lower()
    if text in ("", NEXT):
        return text
    try:
        return str(int(text))  # one of the steps: RolloutConfig checks it
    except ValueError:
        raise ValueError(
            f"--until is a weight of --steps, `{NEXT}`, or empty, got {text!r}"
        ) from None


@dataclass(kw_only=True)
class RolloutConfig(Config):
    challenger_alias: str = alias_option(BENCHMARKED, reads=True)
    champion_alias: str = option(
        LIVE,
        help="alias naming the champion whose live slot carries the rest of the traffic",
        parse=alias_name,
    )
    steps: str = option(
        "5,25,50,100",
        help="the challenger's share of the live traffic at each step, in percent, increasing",
        parse=parse_steps,
    )
    step_duration: float = option(
        60.0, help="seconds each step lasts before it is judged", above=0, max=3600
    )
    min_requests: int = option(
        20,
        help="gate rollout-traffic: requests each side must answer in a step for it to be judged",
        min=2,
    )
    max_error_increase: float = option(
        0.01,
        help="gate rollout-errors: the most the error rate may rise over the champion's (the "
        "lower end of the interval of the difference)",
        min=0,
        max=1,
    )
    max_p95_ratio: float = option(
        1.5,
        help="gate rollout-p95: the largest p95 latency ratio to the champion (the lower end "
        "of its interval)",
        above=0,
    )
    promote: bool = option(True, help="promote the challenger to live when every step passed")
    require_gates: tuple[str, ...] = option(
        (), help="comma-separated gates the promotion requires besides the model's policy"
    )
    until: str = option(
        "",
        help="hold after the step at this weight passed (`next`: after the next step, but the "
        "last): the weight stays, recorded (action hold), nothing is promoted, exit 0; the next "
        "rollout of the same versions goes on after the held step. Empty: every step, then "
        "the promotion",
        parse=parse_until,
    )
    approve: bool = option(
        False,
        help="ask on the terminal before each step after the first: y goes on, h holds (as "
        "--until), anything else sets the weight back to 0 and exits 3; exit 2 when stdin is "
        "no terminal (in Argo: the template's approval parameter, `argo resume`)",
        argo=False,
    )
    abort: bool = option(
        False,
        help="end a held rollout instead: its weight back to 0 (recorded); judges nothing and "
        "moves no alias",
    )
    reason: str = option("", help="why; recorded with every weight change")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.steps = _checked_steps(self.steps)
        if self.until not in ("", NEXT) and int(self.until) not in self.weights:
            raise BadInput(f"--until {self.until} is not a weight of --steps {self.steps}")

    @property
    def weights(self) -> list[int]:
        return [int(w) for w in self.steps.split(",")]


# ------------------------------------------------------------------------------ weights


# ------------------------------------------------------------------------------ judging


def rate_difference(
    challenger_failed: int,
    challenger_n: int,
    champion_failed: int,
    champion_n: int,
    *,
    challenger_version: str,
    champion_version: str,
    champion_alias: str,
    margin: float,
) -> paired.Comparison:
    """The error-rate difference (challenger - champion) of two independent samples, with
    paired.py's bootstrap interval."""
    a = [1.0] * challenger_failed + [0.0] * (challenger_n - challenger_failed)
    b = [1.0] * champion_failed + [0.0] * (champion_n - champion_failed)
    low, high = paired.unpaired_interval(a, b)
    rate_a, rate_b = challenger_failed / challenger_n, champion_failed / champion_n
    return paired.Comparison(
        statistic="error_rate difference (challenger - champion)",
        test=RATE_DIFFERENCE,
        estimate=rate_a - rate_b,
        ci_low=low,
        ci_high=high,
        n=challenger_n + champion_n,
        challenger_version=challenger_version,
        champion_version=champion_version,
        champion_alias=champion_alias,
        margin=margin,
        counts={"challenger": challenger_n, "champion": champion_n},
        extra={"challenger_error_rate": rate_a, "champion_error_rate": rate_b},
    )


def judge_step(
    cfg: RolloutConfig,
    step: int,
    canary: router.ClusterStats,
    live: router.ClusterStats,
    challenger: str,
    champion: str,
):
    """The checks of one step, from the step's statistics of both slots."""
    from ..decisions import gates

    n = min(canary.completed, live.completed)
    common = {
        "challenger_version": challenger,
        "champion_version": champion,
        "champion_alias": cfg.champion_alias,
    }
    errors: paired.Comparison | str
    latency: paired.Comparison | str
    if n < cfg.min_requests:
        why = (
            f"step {step} saw {canary.completed} challenger and {live.completed} champion requests"
        )
        errors = latency = why
    else:
        errors = rate_difference(
            canary.failed,
            canary.completed,
            live.failed,
            live.completed,
            margin=cfg.max_error_increase,
            **common,
        )
        try:
            latency = paired.ratio(
                canary.latencies_ms(),
                live.latencies_ms(),
                statistic="p95",
                margin=cfg.max_p95_ratio,
                **common,
            )
        except ValueError as exc:
            latency = f"no latency ratio: {exc}"
    return [
        (gates.Gate(TRAFFIC_GATE, "requests_each_side", ">=", cfg.min_requests), float(n)),
        gates.champion_check(
            gates.Gate(
                ERRORS_GATE,
                "error_rate_difference_ci_low",
                "<=",
                cfg.max_error_increase,
                against_champion=True,
            ),
            errors,
            "ci_low",
        ),
        gates.champion_check(
            gates.Gate(
                P95_GATE, "p95_ratio_ci_low", "<=", cfg.max_p95_ratio, against_champion=True
            ),
            latency,
            "ci_low",
        ),
    ]


# ------------------------------------------------------------------------------ the stage


def _say(pipeline: str):
    from .stage import say

    return say(pipeline, "rollout")


@contextlib.contextmanager
def _aborted(client, model: str, route: router.Route, champion: str, challenger: str):
    """A rollout stopped with the challenger still holding a share (an error, a refused
    promotion, Ctrl-C, Argo's SIGTERM at the deadline) sets the weight back to 0 on its way
    out, best effort and recorded."""
    import signal

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(Exception):
            now = router.store().read().get(model)
            if now is not None and now.weight != 0:  # a failed step already set it back
                moves.shift(
                    client,
                    model,
                    route,
                    0,
                    reason=f"rollout stopped: {str(exc) or type(exc).__name__}"[:500],
                    champion=champion,
                    challenger=challenger,
                )
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


APPROVE = ("y", "yes")
HOLD_ANSWERS = ("h", "hold")


def held_rollout(client, model: str, canary_slot: str) -> moves.Record | None:
    """The record of a rollout held after a passed step (action hold, the weight still on
    ``canary_slot``), when it is the model's last weight change; else None."""
    last = moves.last_weight_record(client, model)
    if last is None or last.action != moves.HOLD or last.weight_slot != canary_slot:
        return None
    return last if int(last.to_weight) > 0 else None


def _resumed_at(cfg: RolloutConfig, model: str, held, champion: str, challenger: str) -> int:
    """How many of ``cfg``'s steps a held rollout of the same versions already passed (0:
    none held, or one of other versions, which starts over). BadInput when its weight is not
    one of the steps, or when --until is already behind it."""
    if held is None or (held.from_version, held.to_version) != (champion, challenger):
        return 0
    weight = int(held.to_weight)
    if weight not in cfg.weights:
        raise BadInput(
            f"{model} is held at {weight}% to {held.weight_slot} by a rollout of "
            f"{show_version(challenger)}: --steps {cfg.steps} has no step {weight} to go on "
            "from (give steps through it, or --abort to set the weight back to 0); nothing "
            "was changed"
        )
    if cfg.until not in ("", NEXT) and int(cfg.until) <= weight:
        raise BadInput(
            f"--until {cfg.until}: {model} is held at {weight}% already; nothing was changed"
        )
    return cfg.weights.index(weight) + 1


def _abort(client, model: str, route: router.Route, say) -> dict:
    """``--abort``: a held rollout's weight back to 0, recorded; anything else is left."""
    held = held_rollout(client, model, route.canary_slot)
    outputs.write({outputs.HELD: "false"})
    if held is None:
        say(f"no rollout of {model} is held: nothing to end, nothing was changed")
        return {"model": model, "version": "", "weight": None, "aborted": False}
    moves.shift(
        client,
        model,
        route,
        0,
        reason="rollout ended while held",
        champion=held.from_version,
        challenger=held.to_version,
    )
    say(f"weight back to 0: the held rollout of {show_version(held.to_version)} ended")
    return {"model": model, "version": held.to_version, "weight": 0, "aborted": True}


def _approved(say, number: int, target: int) -> str:
    """Ask on the terminal before step ``number``: ``go``, ``hold`` or ``refuse``."""
    say(f"step {number} ({target}%): go on? [y]es / [h]old here / anything else: weight to 0")
    answer = sys.stdin.readline().strip().lower()
    return "go" if answer in APPROVE else "hold" if answer in HOLD_ANSWERS else "refuse"


def rollout(cfg: RolloutConfig, pipeline: str) -> dict:
    """The stage (see the module docstring): a summary of the steps and the promotion."""
    from ..decisions import gates
    from ..registry import backends as backend
    from ..registry import promote
    from .stage import Reporter

    if cfg.approve and not sys.stdin.isatty():
        raise BadInput(
            "--approve asks on a terminal, and stdin is none: use --until (Argo: the "
            "template's approval=true); nothing was changed"
        )
    say = _say(pipeline)
    model = cfg.model_name
    client = tracking.registry_client()
    registered = aliases.get_model(client, model)
    server = backend.for_model(model, dict(registered.tags))
    if server is None:
        raise BadInput(f"model {model!r} has no serving back end: no traffic to shift")
    canary_slot = staged_slot(model)
    route = moves.route_for(model, server, canary_slot)
    if cfg.abort:
        return _abort(client, model, route, say)
    current = {a: str(v) for a, v in registered.aliases.items()}
    challenger = aliases.resolve(client, model, cfg.challenger_alias, current)
    champion = current.get(cfg.champion_alias)
    if champion is None:
        raise BadInput(
            f"{model}@{cfg.champion_alias} is unset: there is no champion to shift traffic "
            f"from (the first version goes live with `mlcp promote`); nothing was changed"
        )
    if champion == challenger:
        raise BadInput(
            f"{model}@{cfg.challenger_alias} and @{cfg.champion_alias} both name "
            f"{show_version(champion)}: nothing to roll out"
        )
    passed = _resumed_at(cfg, model, held_rollout(client, model, canary_slot), champion, challenger)
    for slot, version in ((canary_slot, challenger), (live_slot(model), champion)):
        wrong = moves.served_by_all(server, model, slot, version)
        if wrong:
            raise MlcpError(
                f"{wrong}, not {show_version(version)}: the rollout needs both versions "
                f"warm (`mlcp serving sync --model-name {model}` repairs the slots)"
            )
    reporter = Reporter(pipeline, "rollout")
    clusters = [router.cluster_name(model, r) for r in (router.CANARY_ROLE, router.LIVE_ROLE)]
    summary: dict = {"model": model, "version": challenger, "champion": champion, "steps": []}
    weight = cfg.weights[passed - 1] if passed else 0
    previous_live: router.ClusterStats | None = None
    params = {"steps": cfg.steps, "step_duration": cfg.step_duration, "challenger": challenger}
    run_name = tracking.run_name(model, {"v": challenger, "steps": cfg.steps.replace(",", "-")})
    total = len(cfg.weights)
    outputs.write({outputs.HELD: "false"})
    if passed:
        say(f"{model} is held at {weight}% after step {passed}/{total}: going on from there")

    def observe() -> tuple[router.ClusterStats, router.ClusterStats]:
        """Both slots' statistics over one step duration (the challenger's, the champion's)."""
        time.sleep(router.STATS_FLUSH_S * 1.2)  # histograms flushed before the snapshot
        before = router.cluster_stats(clusters)
        time.sleep(cfg.step_duration)
        time.sleep(router.STATS_FLUSH_S * 1.2)
        after = router.cluster_stats(clusters)
        return tuple(after[c].minus(before[c]) for c in clusters)

    def hold(number: int, why: str) -> dict:
        """Stop after step ``number`` with its weight in place, recorded (action hold)."""
        moves.shift(
            client,
            model,
            route,
            weight,
            action=moves.HOLD,
            reason=f"rollout held after step {number}/{total} ({why}); the next rollout "
            "goes on from here, --abort ends it",
            champion=champion,
            challenger=challenger,
        )
        outputs.write({outputs.HELD: "true"})
        say(
            f"held at {weight}% after step {number}/{total}: {model}@{LIVE} stays "
            f"{show_version(champion)}; run the rollout again to go on, --abort to end it"
        )
        return {**summary, "weight": weight, "held": weight}

    with (
        reporter.stage_run(model, run_name, version=challenger, params=params),
        _aborted(client, model, route, champion, challenger),
    ):
        for number, target in enumerate(cfg.weights, start=1):
            if number <= passed:
                continue
            if cfg.approve and number > passed + 1:
                answer = _approved(say, number, target)
                if answer == "hold":
                    return hold(number - 1, "asked on the terminal")
                if answer == "refuse":  # _aborted sets the weight back to 0, recorded
                    raise GateFailed(
                        f"step {number} ({target}%) was not approved: weight back to 0, "
                        f"{model}@{LIVE} stays {show_version(champion)}",
                        challenger,
                    )
            if target == 100 and previous_live is None and weight > 0:
                # resumed before the last step: the champion's sample is the held weight's
                say(
                    f"watching the held {weight}% for {cfg.step_duration:g} s: the champion's "
                    "sample for the 100% step"
                )
                previous_live = observe()[1]
            took = moves.shift(
                client,
                model,
                route,
                target,
                reason=f"rollout step {number}/{total}" + (f": {cfg.reason}" if cfg.reason else ""),
                champion=champion,
                challenger=challenger,
            )
            weight = target
            say(
                f"step {number}: {target}% to {show_version(challenger)} (router applied it in "
                f"{took:.2f} s); watching {cfg.step_duration:g} s of live traffic"
            )
            canary, live = observe()
            sample = f"step {number}"
            if target == 100 and previous_live is not None:
                # all traffic on the challenger: its champion is the one of the step before
                live, sample = previous_live, f"step {number - 1}"
            previous_live = live
            evidence = {
                "step": number,
                "weight": target,
                "champion_sample": sample,
                "challenger_requests": canary.completed,
                "challenger_failed": canary.failed,
                "champion_requests": live.completed,
                "champion_failed": live.failed,
            }
            summary["steps"].append(evidence)
            checks = judge_step(cfg, number, canary, live, challenger, champion)
            decisions = gates.evaluate_all(
                checks,
                model=model,
                version=challenger,
                pipeline=pipeline,
                stage="rollout",
                evidence=evidence,
            )
            for d in decisions:
                say(f"step {number} gate {d.gate.name}: {d.verdict} ({'; '.join(d.reasons)})")
            failed = [d for d in decisions if not d.passed]
            if failed:
                moves.shift(
                    client,
                    model,
                    route,
                    0,
                    reason=f"rollout step {number} ({target}%) failed "
                    + ", ".join(d.gate.name for d in failed),
                    champion=champion,
                    challenger=challenger,
                )
                say(f"weight back to 0: {model}@{LIVE} stays {show_version(champion)}")
                gates.enforce(decisions)
            if str(target) == cfg.until or (cfg.until == NEXT and number < total):
                return hold(number, f"--until {cfg.until}")
        summary["weight"] = weight
        if not cfg.promote:
            return summary
        # the old live stays warm for a rollback by flip, while the new one carries the traffic
        server.load_live(client, model, champion, previous_slot(model))
        outcome = promote.promote(
            model,
            cfg.challenger_alias,
            LIVE,
            expect_version=challenger,
            require_gates=cfg.require_gates,
            reason=f"rollout {cfg.steps} passed" + (f": {cfg.reason}" if cfg.reason else ""),
            client=client,
        )
        summary["promoted"] = [m.describe() for m in outcome.moves]
        moves.shift(
            client,
            model,
            router.Route(**{**route.__dict__, "canary_slot": previous_slot(model)}),
            0,
            reason=f"{model}-live serves {show_version(challenger)}; "
            f"{previous_slot(model)} keeps {show_version(champion)} warm",
            champion=challenger,
            challenger=champion,
        )
        summary["weight"] = 0
        say(f"{model}@{LIVE} -> {show_version(challenger)}; all traffic on {live_slot(model)}")
    return summary


def stage(pipeline: str) -> Stage:
    """``mlcp <pipeline> rollout`` and the template ``<pipeline>-rollout``."""
    return Stage(
        pipeline,
        "rollout",
        "shift live traffic to the benchmarked version in steps, each judged on its live "
        "traffic; promote when all pass, else weight back to 0 and exit 3",
        RolloutConfig,
        lambda cfg: rollout(cfg, pipeline),
        gates=GATES,
        title="Roll out gradually on live traffic",
        description=(
            "Moves the challenger's (benchmarked) share of the model's traffic at the router "
            "through the steps, judging each step's live traffic against live's (error rate, "
            "p95 latency; decision runs); promotes when every step passes, else sets the "
            "weight back to 0 and fails (exit 3). Every weight change is recorded (shift). "
            "With approval=true it suspends before each step after the first, holding the "
            "weight, until `argo resume`."
        ),
    )
