"""CLI conventions: exit codes, clear errors, and a start-up that imports nothing heavy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from steps.local import stack

from .conftest import ROOT, run_mlcp


def test_help_lists_every_command_and_the_exit_codes():
    result = run_mlcp("--help")
    assert result.code == 0
    for command in ("promote", "rollback", "history", "lineage", "traces", "stack"):
        assert command in result.out
    assert "3 a quality gate said no" in result.out


def test_usage_errors_exit_2():
    assert run_mlcp().code == 2
    assert run_mlcp("launch").code == 2
    missing = run_mlcp("promote", "--model-name", "m")
    assert missing.code == 2 and "--source-alias" in missing.err
    bad_version = run_mlcp("rollback", "--model-name", "m", "--expect-version", "abc")
    assert bad_version.code == 2 and "not a model version number" in bad_version.err


def test_a_mistyped_flag_is_reported_by_its_subcommand_with_the_closest_flag():
    # given a promote with a mistyped optional flag
    typo = run_mlcp(
        "promote",
        "--model-name",
        "m",
        "--source-alias",
        "a",
        "--target-alias",
        "live",
        "--reqiure-gates",
        "accuracy",
    )
    # then the subcommand's usage (not the top level's) and the closest flag, exit 2
    assert typo.code == 2
    assert typo.err.startswith("usage: mlcp promote ")
    assert "unrecognized argument(s): --reqiure-gates accuracy" in typo.err
    assert "did you mean --require-gates?" in typo.err
    # given a mistyped required flag: it is named, not only the flag it left missing
    missing = run_mlcp("promote", "--modelname", "m", "--source-alias", "a", "--target-alias", "b")
    assert missing.code == 2 and missing.err.startswith("usage: mlcp promote ")
    assert "--modelname: did you mean --model-name?" in missing.err
    assert "the following arguments are required: --model-name" in missing.err
    # a pipeline stage too, and a word that resembles no flag gets no suggestion
    stage = run_mlcp("cv", "train", "--model-name", "m", "--epochz", "3")
    assert stage.code == 2 and stage.err.startswith("usage: mlcp cv train ")
    assert "did you mean --epochs?" in stage.err
    stray = run_mlcp("history", "--model-name", "m", "--zzzzzz")
    assert stray.code == 2 and stray.err.startswith("usage: mlcp history ")
    assert "unrecognized argument(s): --zzzzzz\n" in stray.err


def test_triton_replicas_outside_one_to_the_maximum_is_bad_input(tmp_path):
    for given in ("-1", "0", "two", str(stack.MAX_TRITON_REPLICAS + 1)):
        result = run_mlcp("stack", "status", "--home", str(tmp_path), "--triton-replicas", given)
        assert result.code == 2, given
        assert "--triton-replicas: must be a whole number from 1 to" in result.err, given
    assert not any(tmp_path.iterdir())  # nothing started, nothing written


def test_no_tracking_server_configured_is_bad_input(tmp_path):
    result = run_mlcp(
        "history", "--model-name", "m", env={"MLFLOW_TRACKING_URI": "", "MLCP_HOME": str(tmp_path)}
    )
    assert result.code == 2
    assert "MLFLOW_TRACKING_URI is not set" in result.err
    assert "mlcp stack up" in result.err


def test_unreachable_tracking_server_fails_with_exit_1_and_a_message(tmp_path):
    port = stack.free_port()  # nothing listens there
    result = run_mlcp(
        "rollback",
        "--model-name",
        "m",
        env={
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
            "MLCP_HOME": str(tmp_path),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        },
    )
    assert result.code == 1
    assert "mlcp: error:" in result.err
    assert f"127.0.0.1:{port}" in result.err
    assert "Traceback" not in result.err


def test_cli_start_up_imports_no_heavy_library():
    probe = (
        "import sys, json; from steps import cli; cli.build_parser();"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mlflow','boto3','botocore','torch','pandas','numpy','hera','tritonclient'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


def test_flags_accept_the_values_an_argo_template_passes():
    from steps.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        [
            "promote",
            "--model-name=m",
            "--source-alias=previous",
            "--target-alias=live",
            "--expect-version=",
            "--require-gates=",
            "--force=false",
            "--dry-run=true",
        ]
    )
    assert (args.expect_version, args.require_gates, args.force, args.dry_run) == (
        None,
        (),
        False,
        True,
    )
    assert (
        parser.parse_args(
            ["promote", "--model-name=m", "--source-alias=a", "--target-alias=b", "--force"]
        ).force
        is True
    )
    bad = run_mlcp(
        "promote", "--model-name=m", "--source-alias=a", "--target-alias=b", "--force=maybe"
    )
    assert bad.code == 2 and "expected true or false" in bad.err


def test_promote_writes_output_files_for_argo(mlcp, models, tmp_path):
    name = models.create(1)
    models.set_alias(name, "benchmarked", "1")
    out = tmp_path / "outputs"
    result = mlcp(
        "promote",
        "--model-name",
        name,
        "--source-alias",
        "benchmarked",
        "--target-alias",
        "live",
        env={"MLCP_OUTPUT_DIR": str(out)},
    )
    assert result.code == 0, result.err
    assert (out / "version").read_text() == "1"
    assert json.loads((out / "outcome.json").read_text())["moves"][0]["to_version"] == "1"


def test_training_on_a_gpu_that_is_not_there_is_bad_input_before_any_work(tmp_path):
    # This machine has no GPU (CI never has one): --device cuda must fail at once, before any
    # data is read or anything is recorded; the tracking server named here does not exist.
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLCP_HOME": str(tmp_path)}
    missing = str(tmp_path / "no-such-data")
    for pipeline in ("cv", "llm"):
        args = [pipeline, "train", "--model-name", "m", "--data", missing, "--device", "cuda"]
        if pipeline == "llm":
            args += ["--base-model", str(tmp_path / "no-such-base")]
        result = run_mlcp(*args, env=env)
        assert result.code == 2, result.err
        assert "--device cuda: torch sees no GPU here" in result.err
        assert "no-such-data" not in result.err
    unknown = run_mlcp("cv", "train", "--model-name", "m", "--device", "tpu", env=env)
    assert unknown.code == 2 and "unknown --device value 'tpu'" in unknown.err


def test_a_training_with_no_data_anywhere_is_bad_input_before_any_server_is_asked(tmp_path):
    # no --data and no data root: each built-in training (on the stage runner) says what is
    # missing before it asks the tracking server anything (the one named here does not exist)
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLCP_HOME": str(tmp_path)}
    env["MLCP_DATA_ROOT"] = ""
    for pipeline in ("cv", "llm"):
        result = run_mlcp(pipeline, "train", "--model-name", "m", env=env)
        assert result.code == 2, result.err
        assert "no --data given and MLCP_DATA_ROOT is not set" in result.err
        assert "127.0.0.1:9" not in result.err


def test_a_core_command_parses_without_importing_a_pipeline():
    # given the command line of a rollback (the path that must stay fast)
    probe = (
        "import sys, json; from steps import cli;"
        "args = cli.build_parser(['rollback', '--model-name', 'm']).parse_args("
        "['rollback', '--model-name', 'm']);"
        "print(json.dumps([args.model_name, sorted(m for m in sys.modules "
        "if m.startswith(('steps.cv', 'steps.llm', 'steps.spec.pipelines')))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    # then it parses, and no pipeline declaration was imported for it
    assert json.loads(out) == ["m", []]
    # while the full parser (mlcp --help) still lists the pipelines
    assert {"cv", "llm", "data"} <= set(run_mlcp("--help").out.split())


def test_openmp_threads_sleep_when_idle_unless_the_caller_says_otherwise(tmp_path):
    # given `mlcp` started without OMP_WAIT_POLICY, and once with it set by the caller
    script = (
        "import os, sys\n"
        "from steps import cli\n"
        "cli.main(['stack', 'status', '--home', sys.argv[1]])\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
    )
    found = {}
    for given in (None, "ACTIVE"):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if given:
            env["OMP_WAIT_POLICY"] = given
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        found[given] = done.stdout.splitlines()[-1].split()  # after the status table
    # then its OpenMP threads (torch's, and those of every server it starts) sleep when idle,
    # set before torch is imported; a policy the caller chose is kept
    assert found[None] == ["PASSIVE", "False"]
    assert found["ACTIVE"] == ["ACTIVE", "False"]


def test_printed_mlcp_commands_run_from_the_shell_they_were_printed_in(tmp_path):
    """`make demo` runs `.venv/bin/mlcp` with no virtual environment active: the rollback
    command it prints must still run when pasted (mlcp is not on PATH then)."""
    from .commands import assert_runnable

    launcher_dir = str(Path(sys.executable).parent)
    bare = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != launcher_dir)
    for path, expected in ((bare, "not mlcp"), (launcher_dir + os.pathsep + bare, "mlcp")):
        # given a shell whose PATH has (or lacks) this environment's bin folder
        code = "from steps.base import settings; print(settings.mlcp_command('--version'))"
        printed = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PATH": path},
        ).stdout.strip()
        # then what mlcp prints names a program that shell finds, and it runs
        assert (printed.split()[0] == "mlcp") == (expected == "mlcp"), printed
        if expected != "mlcp":
            assert assert_runnable(printed) == ["--version"]
        done = subprocess.run(
            printed,
            shell=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PATH": path},
        )
        assert done.returncode == 0 and done.stdout.startswith("mlcp "), (printed, done.stderr)
