"""``mlcp``: the one command-line entry for people and for the Argo templates.

Every subcommand returns an exit code from :mod:`steps.base.errors` (0 ok, 2 bad input, 3 a gate
said no, 1 anything else). Heavy libraries are imported inside the handlers only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from . import __version__
from .base import outputs
from .base.environment import MLCP_DEBUG
from .base.errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_GATE_FAILED, EXIT_OK, BadInput, MlcpError
from .spec.contract import show_version
from .spec.declare import Opt, Pipeline, Stage, csv, flag_value, options

_LEAF = "_mlcp_parser"  # the namespace attribute naming the (sub)command that parsed last


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with the bad-input code (2) and a one-line hint, and
    an argument nobody recognised is reported by the subcommand it was given to (its usage,
    and the closest flag it takes), not by the top-level parser."""

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(args, namespace)
        if not hasattr(namespace, _LEAF):  # a subcommand's parser returns first
            setattr(namespace, _LEAF, self)
        return namespace, extras

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = self.parse_known_args(args, namespace)
        leaf = getattr(namespace, _LEAF, self)
        delattr(namespace, _LEAF)
        if extras:
            leaf.error(leaf.unrecognized(extras))
        return namespace

    def unrecognized(self, words: Sequence[str]) -> str:
        """Which arguments were not recognised, and the closest flag to each mistyped one."""
        import difflib

        known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        hints = []
        for word in words:
            flag = word.split("=", 1)[0]
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            if flag.startswith("-") and close:
                hints.append(f"{flag}: did you mean {close[0]}?")
        found = f"unrecognized argument(s): {' '.join(words)}"
        return found + (f" ({'; '.join(hints)})" if hints else "")

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("the following arguments are required"):
            strays = self._strays()
            if strays:  # a mistyped flag is why a required one looks missing
                message = f"{self.unrecognized(strays)}; {message}"
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")

    def _strays(self) -> list[str]:
        """The flags given to this parser that it does not know (not even as a prefix)."""
        known = [s for a in self._actions for s in a.option_strings]
        strays = []
        for word in getattr(self, "_given", ()):
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and not any(k.startswith(flag) for k in known):
                strays.append(word)
        return strays


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


# ------------------------------------------------------------------ flags from declarations


def _parser_type(opt: Opt):
    """argparse's ``type``: the flag's text as a value, checked against its declaration."""

    def convert(text: str):
        try:
            value = opt.from_text(text)
            opt.check(value)
        except (ValueError, BadInput) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    convert.__name__ = opt.kind  # argparse names it in "invalid <type> value" messages
    return convert


def help_text(opt: Opt) -> str:
    """The flag's help: its declared text and its default when it has one (the choices are
    the flag's metavar)."""
    text = opt.help
    if not opt.required and opt.default not in (None, False, "", ()):
        text += f" (default {opt.text(opt.default)})"
    return text.replace("%", "%%")  # argparse formats help with %: "95%" stays as written


def add_options(parser: argparse.ArgumentParser, config: type) -> None:
    """One flag per declared field of ``config``."""
    for opt in options(config):
        kwargs: dict = {"dest": opt.name, "help": help_text(opt), "type": _parser_type(opt)}
        if opt.required:
            kwargs["required"] = True
        else:
            kwargs["default"] = opt.default
        if opt.kind == "bool":  # --force alone, or --force=true|false as a template passes it
            kwargs.update(nargs="?", const=True, metavar="true|false")
        elif opt.choices:
            kwargs["metavar"] = "|".join(opt.choices)
        parser.add_argument(opt.flag, **kwargs)


def add_stage(sub, stage: Stage, handler) -> argparse.ArgumentParser:
    parser = sub.add_parser(stage.name, help=stage.help, description=stage.help)
    add_options(parser, stage.config)
    parser.set_defaults(handler=handler, stage=stage)
    return parser


def config_of(args) -> object:
    """The stage's config from the parsed flags (it checks itself again when built)."""
    return args.stage.config(**{o.name: getattr(args, o.name) for o in options(args.stage.config)})


# ------------------------------------------------------------------------------ handlers


def cmd_move(args) -> int:
    """promote or rollback: run it, print the moves, write the template's outputs."""
    cfg = config_of(args)
    outcome = args.stage.run(cfg)
    outputs.write(
        {
            "version": outcome.version,
            "moves": " ".join(m.describe().replace(" ", "") for m in outcome.moves),
            outputs.ACTION: outcome.action,
            "outcome.json": json.dumps(outcome.to_dict()),
        }
    )
    if cfg.json:
        print(json.dumps(outcome.to_dict(), indent=2))
        return EXIT_OK
    prefix = "[dry-run] would move" if outcome.dry_run else "moved"
    for move in outcome.moves:
        print(f"{outcome.model} {prefix} {move.describe()}")
    if outcome.gate_runs:
        print(f"gate decisions relied on: {', '.join(outcome.gate_runs)}")
    return EXIT_OK


def cmd_verdict(args) -> int:
    """A command that says yes or no by its exit code (serving check and sync, audit)."""
    return args.stage.run(config_of(args))


def cmd_record_exit(args) -> int:
    """The Argo exit handler's step: record how the workflow ended, as one JSON line and
    the ``run-id`` output."""
    summary = args.stage.run(config_of(args))
    print(json.dumps(summary))
    outputs.write({"run-id": summary["run_id"]})
    return EXIT_OK


def cmd_policy(args) -> int:
    """``mlcp policy show|set``: the model's promotion policy, as text or JSON."""
    from .registry.policy import print_result

    cfg = config_of(args)
    print_result(args.stage.run(cfg), as_json=cfg.json)
    return EXIT_OK


def cmd_reproduce(args) -> int:
    """``mlcp reproduce``: the verdict for people, then one JSON line, and the template's
    outputs; exit 3 when the new training differs from the recorded one."""
    from .stages.reproduce import DIFFERS, summary_lines

    summary = args.stage.run(config_of(args))
    print("\n".join(summary_lines(summary)))
    print(json.dumps(summary, default=str))
    outputs.write(
        {
            "version": summary["version"],
            "verdict": summary["verdict"],
            "registered-version": summary["registered_version"] or "",
            "result.json": json.dumps(summary, default=str),
        }
    )
    if summary["verdict"] == DIFFERS:
        print(
            f"mlcp: {summary['model']} {show_version(summary['version'])} trained again differs "
            f"from its recorded training (exit {EXIT_GATE_FAILED})",
            file=sys.stderr,
        )
        return EXIT_GATE_FAILED
    return EXIT_OK


def _add_reproduce(sub) -> None:
    """``mlcp reproduce MODEL@ALIAS``, or with ``--model-name`` and ``--alias`` (as its
    template passes them): the declared flags, and the reference as an optional positional."""
    from .registry.aliases import parse_ref
    from .stages.reproduce import EPILOG, REPRODUCE

    p = add_stage(sub, REPRODUCE, cmd_reproduce)
    p.epilog = EPILOG
    p.add_argument(
        "ref", nargs="?", metavar="MODEL@ALIAS", help="the version (or --model-name, --alias)"
    )
    for action in p._actions:
        if action.dest == "model_name":
            action.required = False  # MODEL@ALIAS gives it
    alias_default = p.get_default("alias")

    def run(args) -> int:
        if args.ref:
            ref = parse_ref(args.ref)
            if args.model_name not in (None, ref.model) or args.alias not in (
                alias_default,
                ref.alias,
            ):
                raise BadInput(f"{args.ref} and --model-name/--alias name different versions")
            args.model_name, args.alias = ref.model, ref.alias
        elif not args.model_name:
            raise BadInput("give MODEL@ALIAS, or --model-name (and --alias)")
        return cmd_reproduce(args)

    p.set_defaults(handler=run, model_name=None)


def cmd_stage(args) -> int:
    """A pipeline stage: its summary as one JSON line, and the template's outputs."""
    result = args.stage.run(config_of(args))
    print(json.dumps(result, default=str))
    outputs.write(
        {
            "version": str(result["version"]),
            "verdict": "pass",
            "result.json": json.dumps(result, default=str),
        }
    )
    return EXIT_OK


def cmd_data(args) -> int:
    """``mlcp data <pipeline>``: what was published, as one JSON line and as outputs."""
    published = args.stage.run(config_of(args))
    print(json.dumps(published))
    outputs.write({key.replace("_", "-"): str(value) for key, value in published.items()})
    return EXIT_OK


def cmd_drift(args) -> int:
    """``mlcp <pipeline> drift``: the verdict as one JSON line (the step writes its outputs)."""
    summary = args.stage.run(config_of(args))
    print(json.dumps(summary, default=str))
    return EXIT_OK


def _chain_stage_args(args, pipeline: Pipeline) -> dict[str, list[str]]:
    """Each stage's flags from a chain's (or a retrain's) command line."""
    import shlex

    stage_args = {
        stage.name: shlex.split(getattr(args, _args_dest(stage))) for stage in pipeline.stages
    }
    train = pipeline.stages[0].name
    shared = [f"--{k}={getattr(args, k)}" for k in ("epochs", "seed") if hasattr(args, k)]
    stage_args[train] = [*shared, *stage_args[train]]
    if hasattr(args, "duration"):  # the last stage is a load test that declares it
        perf = pipeline.stages[-1].name
        stage_args[perf] = ["--duration", str(args.duration), *stage_args[perf]]
    return stage_args


def cmd_retrain(args) -> int:
    """``mlcp <pipeline> retrain``: drift, then the chain when it says so
    (steps/stages/retrain.py)."""
    import shlex

    from .stages import retrain

    pipeline = args.pipeline_spec
    drift_args = [
        f"--data={args.data}",
        f"--retrain-on-new-data={'true' if args.retrain_on_new_data else 'false'}",
        *shlex.split(args.drift_args),
    ]
    summary = retrain.run(
        pipeline,
        args.model_name,
        drift_args=drift_args,
        stage_args=_chain_stage_args(args, pipeline),
        force=bool(args.force_retrain),
    )
    print(json.dumps(summary, indent=2, default=str))
    found = summary["drift"]
    if not summary["retrained"]:
        print(f"not retrained: {found['verdict']}: {found['why']}")
        return EXIT_OK
    chain = summary["chain"]
    print(
        f"retrained on {found['data']} ({found['verdict']}): live {chain['model']} "
        f"{show_version(chain['live'])} (previous: {show_version(chain['previous'])}); "
        f"{summary['line']}"
    )
    print(f"roll back with: {chain['rollback']}")
    return EXIT_OK


def cmd_chain(args) -> int:
    from .stages import chain

    pipeline = args.pipeline_spec
    stage_args = _chain_stage_args(args, pipeline)
    summary, line = chain.run(pipeline, args.model_name, stage_args)
    print(json.dumps(summary, indent=2))
    print(
        f"live: {summary['model']} {show_version(summary['live'])} (previous: "
        f"{show_version(summary['previous'])}); {line}; chain {summary['chain_seconds']} s"
    )
    print(f"roll back with: {summary['rollback']}")
    return EXIT_OK


def _args_dest(stage: Stage) -> str:
    return f"{stage.name.replace('-', '_')}_args"


def _add_pipeline(sub, data_sub, pipeline: Pipeline) -> None:
    d = data_sub.add_parser(pipeline.name, help=pipeline.data.help)
    add_options(d, pipeline.data.config)
    d.set_defaults(handler=cmd_data, stage=pipeline.data)
    p = sub.add_parser(pipeline.name, help=pipeline.help)
    stages = p.add_subparsers(dest="stage_name", metavar="STAGE", required=True)
    for stage in pipeline.stages:
        add_stage(stages, stage, cmd_stage)
    c = stages.add_parser(
        "chain",
        help=" -> ".join([*(s.name for s in pipeline.stages), "promote"]) + ": the whole chain",
    )
    _add_chain_flags(c, pipeline)
    c.set_defaults(handler=cmd_chain, pipeline_spec=pipeline)
    if pipeline.drift is not None:
        add_stage(stages, pipeline.drift, cmd_drift)
        _add_retrain(stages, pipeline)
    if pipeline.rollout is not None:
        add_stage(stages, pipeline.rollout, cmd_stage)


def _add_retrain(stages, pipeline: Pipeline) -> None:
    """``mlcp <pipeline> retrain``: the drift step's data and policy flags (from its
    declaration), --force-retrain, --drift-args, and the chain's flags."""
    r = stages.add_parser(
        "retrain",
        help="drift, then the whole chain only when it says retrain (or --force-retrain)",
    )
    drift_opts = {o.name: o for o in options(pipeline.drift.config)}
    for name in ("data", "retrain_on_new_data"):
        opt = drift_opts[name]
        kwargs = {"dest": opt.name, "help": help_text(opt), "type": _parser_type(opt)}
        if opt.kind == "bool":  # None: not given (false)
            kwargs.update(nargs="?", const=True, metavar="true|false", default=None)
        r.add_argument(opt.flag, **{"default": opt.default, **kwargs})
    r.add_argument(
        "--force-retrain",
        nargs="?",
        const=True,
        default=None,
        type=_flag,
        metavar="true|false",
        help="run the chain whatever the drift step says (on the data it found)",
    )
    r.add_argument(
        "--drift-args",
        default="",
        help=f"more options for `mlcp {' '.join(pipeline.drift.command)}` (its thresholds)",
    )
    _add_chain_flags(r, pipeline)
    r.set_defaults(handler=cmd_retrain, pipeline_spec=pipeline)


def _flag(text: str) -> bool:
    try:
        return flag_value(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_chain_flags(c: argparse.ArgumentParser, pipeline: Pipeline) -> None:
    """The flags of ``mlcp <pipeline> chain`` (and of ``retrain``, which runs the chain)."""
    train_cfg = {o.name: o for o in options(pipeline.stages[0].config)}
    c.add_argument(
        "--model-name",
        default=pipeline.default_model,
        help=f"registered model name (default {pipeline.default_model})",
    )
    for name, what in (("epochs", "training epochs"), ("seed", "training seed")):
        if name in train_cfg:  # a training stage that declares it
            default = train_cfg[name].default
            c.add_argument(
                f"--{name}", type=int, default=default, help=f"{what} (default {default})"
            )
    if any(o.name == "duration" for o in options(pipeline.stages[-1].config)):
        c.add_argument("--duration", type=float, default=5.0, help="perf-test seconds (default 5)")
    for stage in pipeline.stages:
        c.add_argument(
            f"--{stage.name}-args",
            dest=_args_dest(stage),
            default="",
            help=f"more options for `mlcp {' '.join(stage.command)}`",
        )


def cmd_history(args) -> int:
    from dataclasses import asdict

    from .records import tracking
    from .registry import aliases, moves, report

    client = tracking.registry_client()  # MLflow's REST API: no `mlflow` import here
    current = dict(aliases.get_model(client, args.model_name).aliases)
    if args.alias:
        aliases.check_alias_name(args.alias)
    records = moves.history(client, args.model_name, args.alias)
    if args.alias and not records and args.alias not in current:
        known = ", ".join(sorted(current)) or "none"
        raise BadInput(
            f"model {args.model_name!r} has no alias {args.alias!r} and no recorded move of "
            f"it (its aliases: {known})"
        )
    if args.json:
        print(json.dumps([asdict(r) for r in records], indent=2))
    elif not records:
        about = f"{args.model_name}@{args.alias}" if args.alias else args.model_name
        print(f"no recorded alias moves for {about}")
    else:
        print("\n".join(report.history_lines(records)))
    return EXIT_OK


def cmd_lineage(args) -> int:
    from .records import tracking
    from .registry import aliases, report

    ref = aliases.parse_ref(args.ref)
    client = tracking.client()
    aliases.get_model(client, ref.model)
    found = report.lineage(client, ref.model, ref.alias)
    if args.json:
        print(json.dumps(found, indent=2, default=str))
    else:
        print("\n".join(report.lineage_lines(ref, found)))
    return EXIT_OK


def cmd_traces(args) -> int:
    from .base import settings
    from .records import tracking
    from .registry import aliases, traces

    ref = aliases.parse_ref(args.ref)
    client = tracking.client()
    aliases.get_model(client, ref.model)
    found = traces.find(
        client, ref.model, ref.alias, grade=args.grade, judge_prompt=args.judge_prompt
    )
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print("\n".join(traces.lines(found, settings.tracking_uri())))
    return EXIT_OK


def cmd_mlflow_users(args) -> int:
    from .local import mlflow_auth

    mlflow_auth.provision_from_env(args.wait)
    print("MLflow users and permissions are as declared (steps/local/mlflow_auth.py)")
    return EXIT_OK


def cmd_stack(args) -> int:
    from pathlib import Path

    from .local import stack

    home = Path(args.home) if args.home else None
    if args.action == "up":
        given = (
            ("mlflow", args.mlflow_port),
            ("s3", args.s3_port),
            ("triton", args.triton_port),
            ("vllm", args.vllm_port),
            ("router", args.router_port),
            ("postgres", args.postgres_port),
        )
        ports = {k: v for k, v in given if v}
        values = stack.up(
            home,
            ports=ports,
            bucket=args.bucket,
            services=args.services,
            backend_store=args.backend_store,
            auth=args.auth,
            triton_replicas=args.triton_replicas,
        )
        for key in (
            "MLFLOW_TRACKING_URI",
            "AWS_ENDPOINT_URL",
            "MLCP_DATA_ROOT",
            "MLCP_TRITON_URL",
            "MLCP_TRITON_REPOSITORY",
            "MLCP_TRITON_REPLICAS",
            "MLCP_VLLM_URL",
            "MLCP_VLLM_ADAPTER_DIR",
        ):
            if key in values:
                print(f"{key}={values[key]}")
    elif args.action == "down":
        stack.down(home)
    else:
        rows = stack.status(home)
        for row in rows:
            print(f"{row['service']:<8} {row['state']:<10} {row['url']:<24} {row['pid']}")
        started = [r for r in rows if r["pid"] != ""]  # those the stack started
        ok = started and all(r["state"] == "running" for r in started)
        return EXIT_OK if ok else EXIT_ERROR
    return EXIT_OK


def _replicas(text: str) -> int:
    from .local.stack import MAX_TRITON_REPLICAS

    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_TRITON_REPLICAS:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {MAX_TRITON_REPLICAS}, got {text!r}"
        )
    return count


def _backend_store(text: str) -> str:
    from .local.stack import BACKEND_STORES

    if text not in BACKEND_STORES:
        raise argparse.ArgumentTypeError(
            f"unknown backend store {text!r}; choose from {','.join(BACKEND_STORES)}"
        )
    return text


def _services(text: str) -> list[str]:
    from .local.stack import known_services

    names = list(csv(text))
    known = known_services()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown service(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(known)}"
        )
    return names


# ------------------------------------------------------------------------------ parser


# The commands that are not a pipeline's: parsing one of them needs no pipeline declaration.
CORE_COMMANDS = (
    "promote",
    "rollback",
    "policy",
    "record-exit",
    "history",
    "lineage",
    "traces",
    "stack",
    "mlflow-users",
    "serving",
    "audit",
)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole ``mlcp`` parser; with ``argv`` naming a core command (promote, rollback, ...)
    the pipelines' stage declarations are left out, so a rollback imports only what it uses
    (about a tenth of a second less on every promote and rollback)."""
    from .registry.promote import PROMOTE, ROLLBACK
    from .stages.workflow_exit import EXIT

    parser = _Parser(
        prog="mlcp",
        description="MLflow as the control plane: promote, roll back and trace models by alias.",
        epilog="Exit codes: 0 success, 2 bad input, 3 a quality gate said no, 1 anything else.",
    )
    parser.add_argument("--version", action="version", version=f"mlcp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_stage(sub, PROMOTE, cmd_move)
    add_stage(sub, ROLLBACK, cmd_move)
    from .registry.policy import SET, SHOW

    p = sub.add_parser("policy", help="show or change the gates a promotion to live requires")
    actions = p.add_subparsers(dest="policy_action", metavar="ACTION", required=True)
    add_stage(actions, SHOW, cmd_policy)
    add_stage(actions, SET, cmd_policy)
    add_stage(sub, EXIT, cmd_record_exit)

    p = sub.add_parser("history", help="the timeline of a model's alias moves")
    p.add_argument("--model-name", required=True, help="registered model name")
    p.add_argument("--alias", default=None, help="only this alias (e.g. live)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_history)

    from .registry.audit import AUDIT
    from .registry.serving_state import CHECK, SYNC

    p = sub.add_parser("serving", help="compare serving with the registry, or repair it")
    actions = p.add_subparsers(dest="serving_action", metavar="ACTION", required=True)
    add_stage(actions, CHECK, cmd_verdict)
    add_stage(actions, SYNC, cmd_verdict)
    add_stage(sub, AUDIT, cmd_verdict)

    p = sub.add_parser("lineage", help="what MODEL@ALIAS is made of and how it got there")
    p.add_argument("ref", metavar="MODEL@ALIAS")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_lineage)

    p = sub.add_parser(
        "traces",
        help="the traced answers of MODEL@ALIAS's evaluation (MLflow traces), by grade or "
        "judge prompt",
    )
    p.add_argument("ref", metavar="MODEL@ALIAS")
    p.add_argument("--grade", default=None, help="only answers graded so (e.g. wrong)")
    p.add_argument(
        "--judge-prompt",
        default=None,
        metavar="SHA",
        help="only answers graded with the judge prompt of this sha256 (or its first 8+ digits)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_traces)

    p = sub.add_parser(
        "mlflow-users",
        help="create or update MLflow's pipeline and read-only users and their permissions, "
        "as MLflow's admin (the chart's hook Job; credentials from the environment only)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=600.0,
        help="seconds to keep trying while MLflow does not answer yet (default 600)",
    )
    p.set_defaults(handler=cmd_mlflow_users)

    p = sub.add_parser("stack", help="start, stop or inspect the local stack (.mlcp/)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--home", default=None, help="stack folder (default $MLCP_HOME or ./.mlcp)")
    p.add_argument("--mlflow-port", type=_port, default=None, help="MLflow port (default 5000)")
    p.add_argument("--s3-port", type=_port, default=None, help="S3 endpoint port (default 9000)")
    p.add_argument(
        "--triton-port",
        type=_port,
        default=None,
        help="Triton HTTP port (default 8000; gRPC and metrics: the next two, else free ones)",
    )
    p.add_argument(
        "--triton-replicas",
        type=_replicas,
        metavar="N",
        default=None,
        help="tritonserver processes serving the same model repository (the first on "
        "--triton-port, the others on free ports); loads go to every one "
        "(MLCP_TRITON_REPLICAS; default: as many as ran before, else 1)",
    )
    p.add_argument("--vllm-port", type=_port, default=None, help="vLLM port (default 8100)")
    p.add_argument(
        "--router-port", type=_port, default=None, help="the router's (Envoy's) port (default 8300)"
    )
    auth = p.add_mutually_exclusive_group()
    auth.add_argument(
        "--auth",
        action="store_const",
        const=True,
        default=None,
        help="run MLflow with its own authentication: an admin, the pipeline user the steps "
        "use (its credentials go into the env file) and a read-only user for the UI, printed "
        "once (default: as the stack was set up, else without)",
    )
    auth.add_argument(
        "--no-auth",
        dest="auth",
        action="store_const",
        const=False,
        help="without authentication (refused for a stack set up with --auth)",
    )
    p.add_argument(
        "--backend-store",
        type=_backend_store,
        default=None,
        help="MLflow's backend store: sqlite, or a PostgreSQL server the stack runs from the "
        "machine's own PostgreSQL, as the chart does (default: the stack's own, else sqlite; "
        "a stack keeps the one it was created with)",
    )
    p.add_argument(
        "--postgres-port",
        type=_port,
        default=None,
        help="PostgreSQL port, with --backend-store postgresql (default 5433)",
    )
    p.add_argument(
        "--services",
        type=_services,
        default=None,
        help="comma-separated services to start, of mlflow,s3,triton,vllm and the servers "
        "installed packages add (mlcp.services: mlserver for examples/tabular) "
        "(default: mlflow,s3,triton; the LLM pipeline needs vllm)",
    )
    p.add_argument(
        "--bucket", default=None, help="bucket to create (default: the stack's own, else mlcp)"
    )
    p.set_defaults(handler=cmd_stack)

    if argv and argv[0] in CORE_COMMANDS:
        return parser
    from .spec.pipelines import installed

    p = sub.add_parser("data", help="build and publish a versioned data set")
    data_sub = p.add_subparsers(dest="pipeline", metavar="PIPELINE", required=True)
    for pipeline in installed():
        _add_pipeline(sub, data_sub, pipeline)
    _add_reproduce(sub)  # not a core command: it trains, through a pipeline's declaration
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from .spec import determinism

    determinism.sleeping_threads()  # before anything imports torch (steps/spec/determinism.py)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from .base import settings

    if args.command != "stack":
        settings.load_env()
    # Fail fast when the tracking server is down, instead of MLflow's two-minute retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # No progress bar per artifact download (deploy, promote, reproduce): the steps say what
    # they fetch in a line of their own.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        try:
            return args.handler(args)
        except Exception as exc:  # MLflow refused our credentials or this user: exit 2
            from .base.rest import refusal

            refused = refusal(exc) if getattr(exc, "exit_code", EXIT_ERROR) == EXIT_ERROR else None
            if refused is None or refused is exc:
                raise
            raise refused from exc
    except MlcpError as exc:
        print(f"mlcp: error: {exc}", file=sys.stderr)
        if exc.exit_code == EXIT_GATE_FAILED:  # the templates' outputs say so too
            refused = getattr(exc, "version", None)
            outputs.write({"verdict": "fail", **({"version": refused} if refused else {})})
        return exc.exit_code
    except KeyboardInterrupt:
        print("mlcp: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a server that cannot be reached, a refused request, a bug
        kind = type(exc).__name__
        print(f"mlcp: error: {kind}: {exc}", file=sys.stderr)
        if MLCP_DEBUG.is_set():
            raise
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
