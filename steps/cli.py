"""``mlcp``: the one command-line entry for people and for the Argo templates.

Every subcommand returns an exit code from :mod:`steps.errors` (0 ok, 2 bad input, 3 a gate
said no, 1 anything else). Heavy libraries are imported inside the handlers only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_GATE_FAILED, EXIT_OK, BadInput, MlcpError


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with the bad-input code (2) and a one-line hint."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _flag(text: str) -> bool:
    """``--force`` alone, or ``--force=true|false`` as an Argo template passes it."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_flag(parser, name: str, help_text: str) -> None:
    parser.add_argument(name, nargs="?", const=True, default=False, type=_flag, help=help_text)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _version(text: str) -> str | None:
    if text == "":  # an Argo parameter left empty means "not given"
        return None
    if text.lower() == "none":
        return "none"
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a model version number: {text!r}")
    return str(int(text))


# ------------------------------------------------------------------------------ handlers


def _print_outcome(outcome, as_json: bool) -> None:
    _write_outputs(
        {
            "version": outcome.version,
            "moves": " ".join(m.describe().replace(" ", "") for m in outcome.moves),
            "outcome.json": json.dumps(outcome.to_dict()),
        }
    )
    if as_json:
        print(json.dumps(outcome.to_dict(), indent=2))
        return
    prefix = "[dry-run] would move" if outcome.dry_run else "moved"
    for move in outcome.moves:
        print(f"{outcome.model} {prefix} {move.describe()}")
    if outcome.gate_runs:
        print(f"gate decisions relied on: {', '.join(outcome.gate_runs)}")


def _write_outputs(values: dict[str, str]) -> None:
    """Write output values as files under ``$MLCP_OUTPUT_DIR`` (the Argo templates read them
    as output parameters); nothing when the variable is unset."""
    folder = os.environ.get("MLCP_OUTPUT_DIR")
    if not folder:
        return
    from pathlib import Path

    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (Path(folder) / name).write_text(value)


def cmd_promote(args) -> int:
    from . import promote

    expect_current = promote.aliases.UNSET
    if args.expect_current is not None:
        expect_current = None if args.expect_current == "none" else args.expect_current
    outcome = promote.promote(
        args.model_name,
        args.source_alias,
        args.target_alias,
        expect_version=args.expect_version,
        expect_current=expect_current,
        require_gates=args.require_gates,
        force=args.force,
        reason=args.reason or "",
        dry_run=args.dry_run,
    )
    _print_outcome(outcome, args.json)
    return EXIT_OK


def cmd_rollback(args) -> int:
    from . import promote

    outcome = promote.rollback(
        args.model_name,
        expect_version=args.expect_version,
        require_gates=args.require_gates,
        reason=args.reason or "rollback",
        dry_run=args.dry_run,
    )
    _print_outcome(outcome, args.json)
    return EXIT_OK


def cmd_history(args) -> int:
    from dataclasses import asdict

    from . import aliases, promote, tracking

    client = tracking.client()
    aliases.get_model(client, args.model_name)
    if args.alias:
        aliases.check_alias_name(args.alias)
    records = promote.history(client, args.model_name, args.alias)
    if args.json:
        print(json.dumps([asdict(r) for r in records], indent=2))
        return EXIT_OK
    if not records:
        print(f"no recorded alias moves for {args.model_name}")
        return EXIT_OK
    print(
        f"{'time (UTC)':<25} {'alias':<12} {'from':>5} -> {'to':<5} {'action':<9} "
        f"{'actor':<20} reason"
    )
    for r in records:
        mark = "" if r.status == "FINISHED" else f" [{r.status.lower()}: unconfirmed]"
        workflow = f" (workflow {r.workflow_name})" if r.workflow_name else ""
        forced = " [forced]" if r.forced else ""
        print(
            f"{r.time:<25} {r.alias:<12} {_ver(r.from_version):>5} -> {_ver(r.to_version):<5} "
            f"{r.action:<9} {r.actor[:20]:<20} {r.reason}{forced}{workflow}{mark}"
        )
    return EXIT_OK


def _ver(version: str | None) -> str:
    return "-" if version is None else f"v{version}"


def cmd_lineage(args) -> int:
    from . import aliases, promote, tracking

    ref = aliases.parse_ref(args.ref)
    client = tracking.client()
    aliases.get_model(client, ref.model)
    report = promote.lineage(client, ref.model, ref.alias)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return EXIT_OK
    print(f"{ref} = version {report['version']} (aliases: {', '.join(report['aliases'])})")
    print(f"  registered {report['created']} from {report['source']}")
    training = report["training_run"]
    if training:
        print(f"  training run {training['run_name']} ({training['run_id']})")
        for key, value in sorted(training["params"].items()):
            print(f"    {key} = {value}")
    else:
        print("  training run: none recorded")
    print("  datasets:" if report["datasets"] else "  datasets: none recorded")
    for ds in report["datasets"]:
        rows = f", {ds['rows']} rows" if ds["rows"] is not None else ""
        print(
            f"    [{ds['stage'] or '?'}/{ds['context']}] {ds['name']} digest {ds['digest']} "
            f"from {ds['source']}{rows}"
        )
    print("  prompts:" if report["prompts"] else "  prompts: none recorded")
    for prompt in report["prompts"]:
        print(f"    [{prompt['stage']}] {prompt['name']} sha256 {prompt['sha256']}")
    print("  gate decisions:" if report["gates"] else "  gate decisions: none recorded")
    for gate in report["gates"]:
        print(f"    {gate['name']}: {gate['verdict'] or 'unverified'} (run {gate['run_id']})")
    became = report["became"]
    if became:
        forced = " [forced]" if became["forced"] else ""
        print(
            f"  became {ref.alias} at {became['time']} by {became['actor']} "
            f"({became['action']} from {_ver(became['from_version'])}): "
            f"{became['reason'] or 'no reason given'}{forced}"
        )
    else:
        print(f"  no recorded move made it {ref.alias}")
    return EXIT_OK


def cmd_stack(args) -> int:
    from pathlib import Path

    from . import stack

    home = Path(args.home) if args.home else None
    if args.action == "up":
        given = (
            ("mlflow", args.mlflow_port),
            ("s3", args.s3_port),
            ("triton", args.triton_port),
            ("vllm", args.vllm_port),
        )
        ports = {k: v for k, v in given if v}
        values = stack.up(home, ports=ports, bucket=args.bucket, services=args.services)
        for key in (
            "MLFLOW_TRACKING_URI",
            "AWS_ENDPOINT_URL",
            "MLCP_DATA_ROOT",
            "MLCP_TRITON_URL",
            "MLCP_TRITON_REPOSITORY",
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


def _services(text: str) -> list[str]:
    from .stack import SERVICES

    names = _csv(text)
    unknown = [n for n in names if n not in SERVICES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown service(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(SERVICES)}"
        )
    return names


def cmd_data(args) -> int:
    from .cv import data

    uri = data.publish(args.out, seed=args.seed)
    print(uri)
    _write_outputs({"uri": uri})
    return EXIT_OK


def _report(result: dict) -> int:
    print(json.dumps(result, default=str))
    _write_outputs(
        {
            "version": str(result["version"]),
            "verdict": "pass",
            "result.json": json.dumps(result, default=str),
        }
    )
    return EXIT_OK


def _device_flag(parser) -> None:
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to train: auto (the GPU when torch sees one, else the CPU), cpu or cuda",
    )


def cmd_cv_train(args) -> int:
    from .cv import data, train

    uri = args.data or data.default_uri()
    if not uri:
        raise BadInput("no --data given and MLCP_DATA_ROOT is not set (run `mlcp stack up`)")
    cfg = train.TrainConfig(
        model_name=args.model_name,
        data=uri,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        image_size=args.image_size,
        seed=args.seed,
        min_val_accuracy=args.min_val_accuracy,
        weights=args.weights or None,
        output_alias=args.output_alias,
        device=args.device,
    )
    return _report(train.train(cfg))


def cmd_cv_deploy(args) -> int:
    from .cv import deploy

    cfg = deploy.DeployConfig(
        model_name=args.model_name,
        source_alias=args.input_alias,
        target_alias=args.output_alias,
        backend=args.backend,
        repository=args.repository or None,
        triton_url=args.triton_url or None,
        tolerance=args.tolerance,
        max_batch_size=args.max_batch_size,
    )
    return _report(deploy.deploy(cfg))


def cmd_cv_evaluate(args) -> int:
    from .cv import evaluate

    cfg = evaluate.EvaluateConfig(
        model_name=args.model_name,
        source_alias=args.input_alias,
        target_alias=args.output_alias,
        data=args.data or None,
        min_accuracy=args.min_accuracy,
        max_regression=args.max_regression,
        batch_size=args.batch_size,
        triton_url=args.triton_url or None,
    )
    return _report(evaluate.evaluate(cfg))


def cmd_cv_perf(args) -> int:
    from .cv import perftest

    cfg = perftest.PerfConfig(
        model_name=args.model_name,
        source_alias=args.input_alias,
        target_alias=args.output_alias,
        users=args.users,
        duration=args.duration,
        batch=args.batch,
        max_p95_ms=args.max_p95_ms,
        min_rps=args.min_rps,
        max_error_rate=args.max_error_rate,
        max_p95_regression_ms=args.max_p95_regression_ms,
        max_rps_regression=args.max_rps_regression,
        triton_url=args.triton_url or None,
    )
    return _report(perftest.perf_test(cfg))


def cmd_cv_chain(args) -> int:
    import shlex

    from .cv import chain

    summary = chain.run(
        args.model_name,
        train_args=[
            "--epochs",
            str(args.epochs),
            "--seed",
            str(args.seed),
            *shlex.split(args.train_args),
        ],
        evaluate_args=shlex.split(args.evaluate_args),
        perf_args=["--duration", str(args.duration), *shlex.split(args.perf_args)],
    )
    print(json.dumps(summary, indent=2))
    print(
        f"live: {args.model_name} v{summary['live']} (previous: "
        f"{'v' + summary['previous'] if summary['previous'] else 'none'}); accuracy "
        f"{summary['accuracy']:.4f}; p95 {summary['p95_ms']:.0f} ms; data "
        f"{summary['data_digest'][:12]}; chain {summary['chain_seconds']} s"
    )
    print(f"roll back with: {summary['rollback']}")
    return EXIT_OK


def _stage_parser(sub, name: str, help_text: str, handler, inp: str, out: str):
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--model-name", required=True, help="registered model name")
    if inp:
        p.add_argument("--input-alias", default=inp, help=f"alias read (default {inp})")
    p.add_argument("--output-alias", default=out, help=f"alias written (default {out})")
    p.set_defaults(handler=handler)
    return p


def _add_cv_parsers(sub) -> None:
    p = sub.add_parser("data", help="build and publish a versioned data set")
    data_sub = p.add_subparsers(dest="pipeline", metavar="PIPELINE", required=True)
    d = data_sub.add_parser("cv", help="scikit-learn digits as a split .npz, to S3 or a path")
    d.add_argument("--out", default=None, help="URI (default $MLCP_DATA_ROOT/cv/digits/...)")
    d.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    d.set_defaults(handler=cmd_data)

    p = sub.add_parser("cv", help="computer-vision pipeline stages (ResNet-18 on Triton)")
    cv = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    t = _stage_parser(
        cv, "train", "train ResNet-18; writes candidate on a pass", cmd_cv_train, "", "candidate"
    )
    t.add_argument("--data", default="", help="data set URI (default: the published digits)")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--image-size", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--min-val-accuracy", type=float, default=0.8)
    t.add_argument("--weights", default="", help="local ResNet-18 state_dict (never downloaded)")
    _device_flag(t)
    d = _stage_parser(
        cv,
        "deploy",
        "export ONNX, load into Triton's staged slot",
        cmd_cv_deploy,
        "candidate",
        "staged",
    )
    d.add_argument("--backend", default="python", help="Triton backend: python | onnxruntime")
    d.add_argument("--repository", default="", help="model repository (default from env)")
    d.add_argument("--triton-url", default="", help="Triton HTTP URL (default from env)")
    d.add_argument("--tolerance", type=float, default=1e-3, help="ONNX vs PyTorch max |diff|")
    d.add_argument("--max-batch-size", type=int, default=64)
    e = _stage_parser(
        cv,
        "evaluate",
        "score the test split through Triton",
        cmd_cv_evaluate,
        "staged",
        "evaluated",
    )
    e.add_argument("--data", default="", help="data set URI (default: the training set's)")
    e.add_argument("--min-accuracy", type=float, default=0.8)
    e.add_argument(
        "--max-regression",
        type=float,
        default=0.02,
        help="largest accuracy drop allowed against the live version",
    )
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--triton-url", default="")
    f = _stage_parser(
        cv,
        "perf-test",
        "load-test the staged slot with locust",
        cmd_cv_perf,
        "evaluated",
        "benchmarked",
    )
    f.add_argument("--users", type=int, default=4)
    f.add_argument("--duration", type=float, default=8.0, help="seconds")
    f.add_argument("--batch", type=int, default=1, help="images per request")
    f.add_argument("--max-p95-ms", type=float, default=500.0)
    f.add_argument("--min-rps", type=float, default=5.0)
    f.add_argument("--max-error-rate", type=float, default=0.01)
    f.add_argument("--max-p95-regression-ms", type=float, default=100.0)
    f.add_argument("--max-rps-regression", type=float, default=50.0)
    f.add_argument("--triton-url", default="")
    c = cv.add_parser("chain", help="run train -> deploy -> evaluate -> perf-test -> promote")
    c.add_argument("--model-name", default="resnet18-digits", help="default resnet18-digits")
    c.add_argument("--epochs", type=int, default=3)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--duration", type=float, default=5.0, help="perf-test seconds")
    c.add_argument("--train-args", default="", help="more options for `mlcp cv train`")
    c.add_argument("--evaluate-args", default="", help="more options for `mlcp cv evaluate`")
    c.add_argument("--perf-args", default="", help="more options for `mlcp cv perf-test`")
    c.set_defaults(handler=cmd_cv_chain)


# ------------------------------------------------------------------------------ llm


def cmd_data_llm(args) -> int:
    from .llm import data

    published = data.publish(args.out or None, seed=args.seed)
    print(json.dumps(published))
    _write_outputs({"uri": published["data"], "base-model": published["base_model"]})
    return EXIT_OK


def cmd_llm_train(args) -> int:
    from .llm import data, train

    uri = args.data or data.default_uri()
    if not uri:
        raise BadInput("no --data given and MLCP_DATA_ROOT is not set (run `mlcp stack up`)")
    base = args.base_model or data.default_base()
    if not base:
        raise BadInput(
            "no --base-model given and neither MLCP_LLM_BASE_MODEL nor MLCP_DATA_ROOT is set"
        )
    cfg = train.TrainConfig(
        model_name=args.model_name,
        data=uri,
        base_model=base,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        target_modules=tuple(args.target_modules),
        seed=args.seed,
        max_eval_perplexity=args.max_eval_perplexity,
        max_length=args.max_length,
        output_alias=args.output_alias,
        device=args.device,
    )
    return _report(train.train(cfg))


def cmd_llm_deploy(args) -> int:
    from .llm import deploy

    cfg = deploy.DeployConfig(
        model_name=args.model_name,
        source_alias=args.input_alias,
        target_alias=args.output_alias,
        vllm_url=args.vllm_url or None,
        adapter_dir=args.adapter_dir or None,
        smoke_prompt=args.smoke_prompt,
        max_tokens=args.max_tokens,
    )
    return _report(deploy.deploy(cfg))


def cmd_llm_evaluate(args) -> int:
    from .llm import evaluate

    cfg = evaluate.EvaluateConfig(
        model_name=args.model_name,
        source_alias=args.input_alias,
        target_alias=args.output_alias,
        data=args.data or None,
        judge=args.judge,
        judge_url=args.judge_url or None,
        judge_model=args.judge_model or None,
        judge_constraint=args.judge_constraint,
        min_correct=args.min_correct,
        max_regression=args.max_regression,
        max_refusal=args.max_refusal,
        min_gain=args.min_gain,
        max_tokens=args.max_tokens,
        limit=args.limit,
        vllm_url=args.vllm_url or None,
    )
    return _report(evaluate.evaluate(cfg))


def cmd_llm_perf(args) -> int:
    from .llm import perftest

    cfg = perftest.PerfConfig(
        model_name=args.model_name,
        source_alias=args.input_alias,
        target_alias=args.output_alias,
        users=args.users,
        duration=args.duration,
        max_tokens=args.max_tokens,
        max_ttft_p95_ms=args.max_ttft_p95_ms,
        max_e2e_p95_ms=args.max_e2e_p95_ms,
        min_tokens_per_s=args.min_tokens_per_s,
        min_success_rate=args.min_success_rate,
        max_ttft_regression_ms=args.max_ttft_regression_ms,
        max_e2e_regression_ms=args.max_e2e_regression_ms,
        max_tps_regression=args.max_tps_regression,
        vllm_url=args.vllm_url or None,
    )
    return _report(perftest.perf_test(cfg))


def cmd_llm_chain(args) -> int:
    import shlex

    from .llm import chain

    summary = chain.run(
        args.model_name,
        train_args=[
            "--epochs",
            str(args.epochs),
            "--seed",
            str(args.seed),
            *shlex.split(args.train_args),
        ],
        deploy_args=shlex.split(args.deploy_args),
        evaluate_args=shlex.split(args.evaluate_args),
        perf_args=["--duration", str(args.duration), *shlex.split(args.perf_args)],
    )
    print(json.dumps(summary, indent=2))
    print(
        f"live: {args.model_name} v{summary['live']} (previous: "
        f"{'v' + summary['previous'] if summary['previous'] else 'none'}); on the eval set "
        f"the adapter is correct {summary['correct_rate']:.0%} (score {summary['score']:.3f}), "
        f"the bare base {summary['base_model']} {summary['base_correct_rate']:.0%} (score "
        f"{summary['base_score']:.3f}); TTFT p95 {summary['ttft_p95_ms']:.0f} ms, "
        f"{summary['tokens_per_s']:.0f} tokens/s; data {summary['data_digest'][:12]}; "
        f"chain {summary['chain_seconds']} s"
    )
    print(f"roll back with: {summary['rollback']}")
    return EXIT_OK


def _subcommands(parser):
    """The sub-command group of ``parser`` (to add a pipeline under ``mlcp data``)."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _add_llm_parsers(sub) -> None:
    data_sub = _subcommands(sub.choices["data"])
    d = data_sub.add_parser(
        "llm", help="an instruction set (JSONL) and a small base model, to S3 or a path"
    )
    d.add_argument("--out", default=None, help="URI prefix (default $MLCP_DATA_ROOT)")
    d.add_argument("--seed", type=int, default=0, help="split and weights seed (default 0)")
    d.set_defaults(handler=cmd_data_llm)

    p = sub.add_parser("llm", help="LLM pipeline stages (LoRA adapters served by vLLM)")
    llm = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    t = _stage_parser(
        llm,
        "train",
        "train a LoRA adapter; writes candidate on a pass",
        cmd_llm_train,
        "",
        "candidate",
    )
    t.add_argument("--data", default="", help="instructions URI (default: the published set)")
    t.add_argument(
        "--base-model",
        default="",
        help="base model: .tar (s3:// or local), local folder, or model name "
        "(default $MLCP_LLM_BASE_MODEL, else the one `mlcp data llm` published)",
    )
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    t.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (default 16)")
    t.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (default 0)")
    t.add_argument(
        "--target-modules",
        type=_csv,
        default=list(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
        help="comma-separated modules to adapt (default: every linear layer of a block)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-eval-perplexity", type=float, default=2.0, help="training gate")
    t.add_argument("--max-length", type=int, default=64, help="tokens per sample")
    _device_flag(t)
    d = _stage_parser(
        llm,
        "deploy",
        "load the adapter into vLLM's staged slot",
        cmd_llm_deploy,
        "candidate",
        "staged",
    )
    d.add_argument("--vllm-url", default="", help="vLLM URL (default $MLCP_VLLM_URL)")
    d.add_argument("--adapter-dir", default="", help="folder the server reads (default from env)")
    d.add_argument("--smoke-prompt", default="repeat: red blue green")
    d.add_argument("--max-tokens", type=int, default=8)
    e = _stage_parser(
        llm,
        "evaluate",
        "answer the eval set through vLLM; a judge grades it",
        cmd_llm_evaluate,
        "staged",
        "evaluated",
    )
    e.add_argument("--data", default="", help="instructions URI (default: the training set's)")
    e.add_argument("--judge", default="reference", help="reference | openai")
    e.add_argument("--judge-url", default="", help="openai judge URL (default $MLCP_JUDGE_URL)")
    e.add_argument("--judge-model", default="", help="openai judge model ($MLCP_JUDGE_MODEL)")
    e.add_argument(
        "--judge-constraint",
        default="structured_outputs",
        help="how the judge's output is held to the labels: structured_outputs | "
        "guided_choice | none",
    )
    e.add_argument("--min-correct", type=float, default=0.5)
    e.add_argument(
        "--max-regression",
        type=float,
        default=0.1,
        help="largest drop of the correct rate allowed against the live version",
    )
    e.add_argument("--max-refusal", type=float, default=0.1)
    e.add_argument("--min-gain", type=float, default=0.2, help="minimum score gain over base")
    e.add_argument("--max-tokens", type=int, default=12)
    e.add_argument("--limit", type=int, default=0, help="only the first N eval prompts")
    e.add_argument("--vllm-url", default="")
    f = _stage_parser(
        llm,
        "perf-test",
        "load-test the staged slot with streaming completions",
        cmd_llm_perf,
        "evaluated",
        "benchmarked",
    )
    f.add_argument("--users", type=int, default=2)
    f.add_argument("--duration", type=float, default=8.0, help="seconds")
    f.add_argument("--max-tokens", type=int, default=16, help="tokens per completion")
    f.add_argument("--max-ttft-p95-ms", type=float, default=1000.0)
    f.add_argument("--max-e2e-p95-ms", type=float, default=3000.0)
    f.add_argument("--min-tokens-per-s", type=float, default=20.0)
    f.add_argument("--min-success-rate", type=float, default=0.99)
    f.add_argument("--max-ttft-regression-ms", type=float, default=500.0)
    f.add_argument("--max-e2e-regression-ms", type=float, default=1000.0)
    f.add_argument("--max-tps-regression", type=float, default=100.0)
    f.add_argument("--vllm-url", default="")
    c = llm.add_parser("chain", help="run train -> deploy -> evaluate -> perf-test -> promote")
    c.add_argument(
        "--model-name", default="tiny-llama-instruct", help="default tiny-llama-instruct"
    )
    c.add_argument("--epochs", type=int, default=12)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--duration", type=float, default=5.0, help="perf-test seconds")
    c.add_argument("--train-args", default="", help="more options for `mlcp llm train`")
    c.add_argument("--deploy-args", default="", help="more options for `mlcp llm deploy`")
    c.add_argument("--evaluate-args", default="", help="more options for `mlcp llm evaluate`")
    c.add_argument("--perf-args", default="", help="more options for `mlcp llm perf-test`")
    c.set_defaults(handler=cmd_llm_chain)


# ------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mlcp",
        description="MLflow as the control plane: promote, roll back and trace models by alias.",
        epilog="Exit codes: 0 success, 2 bad input, 3 a quality gate said no, 1 anything else.",
    )
    parser.add_argument("--version", action="version", version=f"mlcp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("promote", help="point one alias at the version another alias names")
    p.add_argument("--model-name", required=True, help="registered model name")
    p.add_argument("--source-alias", required=True, help="alias naming the version to promote")
    p.add_argument("--target-alias", required=True, help="alias to move (e.g. live)")
    p.add_argument(
        "--expect-version",
        type=_version,
        default=None,
        help="refuse unless the source alias names this version",
    )
    p.add_argument(
        "--expect-current",
        type=_version,
        default=None,
        help="refuse unless the target alias names this version now ('none': unset)",
    )
    p.add_argument(
        "--require-gates",
        type=_csv,
        default=[],
        help="comma-separated gates that must have a passing decision on the version",
    )
    _add_flag(p, "--force", "promote despite missing gates")
    p.add_argument("--reason", default="", help="why (required with --force; recorded)")
    _add_flag(p, "--dry-run", "show the moves, change nothing")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(handler=cmd_promote)

    p = sub.add_parser("rollback", help="restore the previous live version (no swap)")
    p.add_argument("--model-name", required=True, help="registered model name")
    p.add_argument(
        "--expect-version",
        type=_version,
        default=None,
        help="refuse unless 'previous' names this version",
    )
    p.add_argument(
        "--require-gates",
        type=_csv,
        default=[],
        help="gates the restored version must have passed (default: none)",
    )
    p.add_argument("--reason", default="", help="why (recorded; default 'rollback')")
    _add_flag(p, "--dry-run", "show the moves, change nothing")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(handler=cmd_rollback)

    p = sub.add_parser("history", help="the timeline of a model's alias moves")
    p.add_argument("--model-name", required=True, help="registered model name")
    p.add_argument("--alias", default=None, help="only this alias (e.g. live)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_history)

    p = sub.add_parser("lineage", help="what MODEL@ALIAS is made of and how it got there")
    p.add_argument("ref", metavar="MODEL@ALIAS")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_lineage)

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
    p.add_argument("--vllm-port", type=_port, default=None, help="vLLM port (default 8100)")
    p.add_argument(
        "--services",
        type=_services,
        default=None,
        help="comma-separated services to start, of mlflow,s3,triton,vllm "
        "(default: mlflow,s3,triton; the LLM pipeline needs vllm)",
    )
    p.add_argument(
        "--bucket", default=None, help="bucket to create (default: the stack's own, else mlcp)"
    )
    p.set_defaults(handler=cmd_stack)
    _add_cv_parsers(sub)
    _add_llm_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from . import settings

    if args.command != "stack":
        settings.load_env()
    # Fail fast when the tracking server is down, instead of MLflow's two-minute retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        return args.handler(args)
    except MlcpError as exc:
        print(f"mlcp: error: {exc}", file=sys.stderr)
        if exc.exit_code == EXIT_GATE_FAILED:  # the templates' outputs say so too
            refused = getattr(exc, "version", None)
            _write_outputs({"verdict": "fail", **({"version": refused} if refused else {})})
        return exc.exit_code
    except KeyboardInterrupt:
        print("mlcp: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a server that cannot be reached, a refused request, a bug
        kind = type(exc).__name__
        print(f"mlcp: error: {kind}: {exc}", file=sys.stderr)
        if os.environ.get("MLCP_DEBUG"):
            raise
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
