"""MLflow with its own authentication, started by the stack's own code (`mlcp stack up
--auth`, MLflow only, in its own stack folder): the pipeline user does the steps' work, no
credentials or wrong ones exit 2 naming what to set, and the read-only user reads and moves
nothing. Both client paths are covered: the REST client of promote/rollback/history/policy
(steps/base/rest.py) and the ``mlflow`` package of the stage steps (``mlcp lineage`` here, the
cheapest command that goes through it)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from steps.local import mlflow_auth, stack

from .conftest import ModelFactory, run_mlcp

VARIABLES = mlflow_auth.PIPELINE_ENV  # MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory):
    """`mlcp stack up --auth --services mlflow` in a fresh folder, through the real CLI;
    MLflow's global tracking URI and the pipeline user's variables point at it for the
    module (restored afterwards, as the session's ``backend_store`` fixture does)."""
    import mlflow

    from steps.records import tracking

    home = tmp_path_factory.mktemp("mlcp-auth")
    port = stack.free_port()
    env = {k: v for k, v in os.environ.items() if k not in (*VARIABLES, "MLFLOW_TRACKING_URI")}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        up = run_mlcp(
            "stack",
            "up",
            "--home",
            str(home),
            "--services",
            "mlflow",
            "--mlflow-port",
            str(port),
            "--auth",
            timeout=240,
        )
        assert up.code == 0, up.err[-3000:]
        values = {
            k: v
            for k, v in (line.split("=", 1) for line in _exports(home / "env"))
            if k in ("MLFLOW_TRACKING_URI", *VARIABLES)
        }
        os.environ.update(values)
        client = tracking.client()
        yield {"home": home, "up": up, "values": values, "models": ModelFactory(client)}
    finally:
        stack.down(home)
        os.environ.clear()
        os.environ.update(saved)
        if saved.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])


def _exports(path):
    return [
        line[len("export ") :]
        for line in path.read_text().splitlines()
        if line.startswith("export ")
    ]


def mlcp_as(auth_stack, tmp_path, *args, username=None, password=None, use_env_file=False):
    """The real CLI with exactly these credentials: none unless given (the stack's env file
    is read only with ``use_env_file``)."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env["MLFLOW_TRACKING_URI"] = auth_stack["values"]["MLFLOW_TRACKING_URI"]
    env["MLCP_HOME"] = str(auth_stack["home"] if use_env_file else tmp_path)
    for name, value in zip(VARIABLES, (username, password), strict=True):
        if value is not None:
            env[name] = value
    if use_env_file:
        env.pop("MLFLOW_TRACKING_URI")
    return _run(args, env)


def _run(args, env):
    import subprocess
    import sys

    from .conftest import ROOT, Result

    proc = subprocess.run(
        [sys.executable, "-m", "steps.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=env,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def promote_args(name: str) -> tuple[str, ...]:
    """`mlcp promote` of NAME's benchmarked version to live."""
    route = ("--source-alias", "benchmarked", "--target-alias", "live")
    return ("promote", "--model-name", name, *route, "--reason", "auth test")


def promote(auth_stack, tmp_path, name, **creds):
    return mlcp_as(auth_stack, tmp_path, *promote_args(name), **creds)


def test_the_stack_keeps_the_credentials_private_and_prints_the_read_only_user(auth_stack):
    home = auth_stack["home"]
    folder = mlflow_auth.auth_dir(home)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for who in (mlflow_auth.ADMIN, mlflow_auth.PIPELINE, mlflow_auth.READ_ONLY):
        assert stat.S_IMODE((folder / f"{who}.json").stat().st_mode) == 0o600, who
    assert stat.S_IMODE((home / "env").stat().st_mode) == 0o600
    # the steps get the pipeline user; the admin's password is nowhere in the env file
    pipeline = mlflow_auth.stored(home, mlflow_auth.PIPELINE)
    admin = mlflow_auth.stored(home, mlflow_auth.ADMIN)
    assert auth_stack["values"][VARIABLES[0]] == pipeline.username
    assert auth_stack["values"][VARIABLES[1]] == pipeline.password
    assert admin.password not in (home / "env").read_text()
    # the read-only user is printed once, by the up that created it
    viewer = mlflow_auth.stored(home, mlflow_auth.READ_ONLY)
    assert viewer.username in auth_stack["up"].err and viewer.password in auth_stack["up"].err
    again = run_mlcp("stack", "up", "--home", str(home), "--services", "mlflow")
    assert again.code == 0, again.err
    assert viewer.password not in again.err and "already running" in again.err


def test_a_stack_with_auth_is_never_started_open(auth_stack):
    result = run_mlcp(
        "stack", "up", "--home", str(auth_stack["home"]), "--services", "mlflow", "--no-auth"
    )
    assert result.code == 2
    assert "runs MLflow with authentication" in result.err and "--no-auth" in result.err


def test_the_pipeline_user_promotes_rolls_back_and_reads_history(auth_stack, tmp_path):
    models = auth_stack["models"]
    name = models.create(2)
    for version in ("1", "2"):
        models.set_alias(name, "benchmarked", version)
        result = promote(auth_stack, tmp_path, name, use_env_file=True)
        assert result.code == 0, result.err
    assert models.aliases(name) == {"benchmarked": "2", "live": "2", "previous": "1"}
    result = mlcp_as(
        auth_stack, tmp_path, "rollback", "--model-name", name, "--reason", "bad", use_env_file=True
    )
    assert result.code == 0, result.err
    assert models.aliases(name)["live"] == "1"
    result = mlcp_as(
        auth_stack, tmp_path, "history", "--model-name", name, "--json", use_env_file=True
    )
    assert result.code == 0, result.err
    made = [(r["alias"], r["to_version"]) for r in json.loads(result.out) if r["alias"] == "live"]
    assert made[-3:] == [("live", "1"), ("live", "2"), ("live", "1")]


def test_without_credentials_every_path_exits_2_naming_both_variables(auth_stack, tmp_path):
    models = auth_stack["models"]
    name = models.create(1)
    models.set_alias(name, "benchmarked", "1")
    for args in (
        promote_args(name),
        ("history", "--model-name", name),
        ("policy", "show", "--model-name", name),
        ("lineage", f"{name}@benchmarked"),  # the mlflow package's client
    ):
        result = mlcp_as(auth_stack, tmp_path, *args)
        assert result.code == 2, (args, result.err)
        assert "requires authentication" in result.err, (args, result.err)
        assert all(v in result.err for v in VARIABLES), (args, result.err)
    # one of the two set: the message names the other
    result = mlcp_as(auth_stack, tmp_path, "history", "--model-name", name, username="someone")
    assert result.code == 2 and f"{VARIABLES[1]} is not set" in result.err, result.err
    assert models.aliases(name) == {"benchmarked": "1"}


def test_wrong_credentials_exit_2_on_both_paths(auth_stack, tmp_path):
    models = auth_stack["models"]
    name = models.create(1)
    models.set_alias(name, "benchmarked", "1")
    pipeline = mlflow_auth.stored(auth_stack["home"], mlflow_auth.PIPELINE)
    wrong = {"username": pipeline.username, "password": "not-the-password"}
    for result in (
        promote(auth_stack, tmp_path, name, **wrong),
        mlcp_as(auth_stack, tmp_path, "lineage", f"{name}@benchmarked", **wrong),
    ):
        assert result.code == 2, result.err
        assert f"refused the credentials of user {pipeline.username!r}" in result.err
        assert pipeline.password not in result.err
    assert models.aliases(name) == {"benchmarked": "1"}


def test_the_read_only_user_reads_and_cannot_promote(auth_stack, tmp_path):
    models = auth_stack["models"]
    name = models.create(2)
    models.set_alias(name, "benchmarked", "1")
    assert promote(auth_stack, tmp_path, name, use_env_file=True).code == 0
    models.set_alias(name, "benchmarked", "2")
    viewer = mlflow_auth.stored(auth_stack["home"], mlflow_auth.READ_ONLY)
    creds = {"username": viewer.username, "password": viewer.password}
    # it reads: the history and the policy
    history = mlcp_as(auth_stack, tmp_path, "history", "--model-name", name, **creds)
    assert history.code == 0, history.err
    assert "live" in history.out
    assert mlcp_as(auth_stack, tmp_path, "policy", "show", "--model-name", name, **creds).code == 0
    # it cannot move live: exit 2, permission denied for that user, no alias moved
    result = promote(auth_stack, tmp_path, name, **creds)
    assert result.code == 2, result.err
    assert f"to user {viewer.username!r}: permission denied" in result.err
    assert models.aliases(name) == {"benchmarked": "2", "live": "1"}


def test_the_chart_jobs_command_makes_the_users_from_the_environment(auth_stack, tmp_path):
    # given the admin's, the pipeline's and a new read-only user's credentials, as the hook
    # Job's Secrets give them (nothing on the command line)
    home = auth_stack["home"]
    admin = mlflow_auth.stored(home, mlflow_auth.ADMIN)
    pipeline = mlflow_auth.stored(home, mlflow_auth.PIPELINE)
    viewer = mlflow_auth.Credentials("mlcp-viewer-2", "a-long-enough-password")
    given = dict(
        zip(
            (*mlflow_auth.ADMIN_ENV, *mlflow_auth.PIPELINE_ENV, *mlflow_auth.READ_ONLY_ENV),
            (admin.username, admin.password, pipeline.username, pipeline.password)
            + (viewer.username, viewer.password),
            strict=True,
        )
    )
    env = {**os.environ, **given, "MLCP_HOME": str(tmp_path)}
    env["MLFLOW_TRACKING_URI"] = auth_stack["values"]["MLFLOW_TRACKING_URI"]
    # when the Job's command runs (twice: it is idempotent)
    for _ in range(2):
        result = _run(("mlflow-users", "--wait", "5"), env)
        assert result.code == 0, result.err
    # then the new user reads, and the pipeline user still works
    name = auth_stack["models"].create(1)
    creds = {"username": viewer.username, "password": viewer.password}
    assert mlcp_as(auth_stack, tmp_path, "history", "--model-name", name, **creds).code == 0
    assert (
        mlcp_as(auth_stack, tmp_path, "history", "--model-name", name, use_env_file=True).code == 0
    )
    # a missing admin password is bad input that names the variable
    env.pop(mlflow_auth.ADMIN_ENV[1])
    result = _run(("mlflow-users", "--wait", "5"), env)
    assert result.code == 2 and mlflow_auth.ADMIN_ENV[1] in result.err, result.err


def test_the_clusters_credential_files_are_all_the_steps_and_the_users_job_need(
    auth_stack, tmp_path
):
    """The credentials laid out as the chart mounts them (steps/base/secrets.py): one file per
    Secret key, read through NAME_FILE variables, and MLflow's credentials file under HOME;
    no credential in any environment variable."""
    from steps.base import secrets

    home = auth_stack["home"]
    admin = mlflow_auth.stored(home, mlflow_auth.ADMIN)
    pipeline = mlflow_auth.stored(home, mlflow_auth.PIPELINE)
    viewer = mlflow_auth.Credentials("mlcp-viewer-files", "another-long-password")
    mounted = tmp_path / "secrets"  # the Secrets' files
    mounted.mkdir(mode=0o700)
    given = dict(
        zip(
            (*mlflow_auth.ADMIN_ENV, *mlflow_auth.READ_ONLY_ENV),
            (admin.username, admin.password, viewer.username, viewer.password),
            strict=True,
        )
    )
    for name, value in given.items():
        (mounted / name).write_text(value + "\n")  # a file from a Secret may end in a newline
    steps_home = tmp_path / "home"  # the pipeline user: MLflow's credentials file
    (steps_home / ".mlflow").mkdir(parents=True)
    (steps_home / ".mlflow" / "credentials").write_text(
        f"[mlflow]\nmlflow_tracking_username = {pipeline.username}\n"
        f"mlflow_tracking_password = {pipeline.password}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (*VARIABLES, *given)}
    env.update(HOME=str(steps_home), MLCP_HOME=str(tmp_path / "no-stack"))
    env["MLFLOW_TRACKING_URI"] = auth_stack["values"]["MLFLOW_TRACKING_URI"]
    env.update({secrets.file_variable(name): str(mounted / name) for name in given})
    # when the users Job's command runs with them, then it makes the read-only user
    made = _run(("mlflow-users", "--wait", "5"), env)
    assert made.code == 0, made.err
    # and the steps work as the pipeline user on both client paths (REST and mlflow's client)
    name = auth_stack["models"].create(1)
    auth_stack["models"].set_alias(name, "candidate", "1")
    assert _run(("history", "--model-name", name), env).code == 0
    lineage = _run(("lineage", f"{name}@candidate"), env)
    assert lineage.code == 0, lineage.err
    # and the new read-only user signs in with what its files said
    creds = {"username": viewer.username, "password": viewer.password}
    assert mlcp_as(auth_stack, tmp_path, "history", "--model-name", name, **creds).code == 0
    # a missing file is a missing credential, named with the file it was looked for in
    (mounted / mlflow_auth.ADMIN_ENV[1]).unlink()
    missing = _run(("mlflow-users", "--wait", "5"), env)
    assert missing.code == 2, missing.err
    assert f"{mlflow_auth.ADMIN_ENV[1]} (or the file {mounted / mlflow_auth.ADMIN_ENV[1]}" in (
        missing.err
    )
