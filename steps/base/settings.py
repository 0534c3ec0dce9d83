"""Where the steps find their services, and who and what is running them.

The local stack (``mlcp stack up``) writes every variable the steps need into one file,
``.mlcp/env``. ``load_env`` reads it for the variables the process does not already set,
so a command run next to the stack just works, and an explicit environment (the Argo
ConfigMap and Secret, or a user's shell) always wins.
"""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path

from . import environment
from .environment import (
    ARGO_WORKFLOW_NAME,
    ARGO_WORKFLOW_UID,
    MLCP_ACTOR,
    MLCP_HOME,
    MLCP_TEST_PAUSE_AFTER_RECORD_S,
    MLFLOW_TRACKING_URI,
)

ENV_FILE_NAME = "env"


def stack_home() -> Path:
    """The folder of the local stack: ``$MLCP_HOME``, else ``./.mlcp``."""
    return Path(MLCP_HOME.get() or Path.cwd() / ".mlcp").resolve()


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("'\"")
    return values


def load_env(home: Path | None = None) -> Path | None:
    """Fill unset variables from the stack's env file; return the file used, if any."""
    path = (home or stack_home()) / ENV_FILE_NAME
    if not path.is_file():
        return None
    for key, value in read_env_file(path).items():
        if not environment.is_set(key):  # set and non-empty wins
            os.environ[key] = value
    return path


def tracking_uri() -> str:
    uri = MLFLOW_TRACKING_URI.get()
    if not uri:
        from .errors import BadInput

        raise BadInput(
            "MLFLOW_TRACKING_URI is not set: start the local stack with `mlcp stack up` "
            "or point it at your MLflow server"
        )
    return uri


def server_url(given: str | None, variable: str, server: str, flag: str) -> str:
    """A server's http(s) URL: ``given`` (its ``flag``), else ``$variable``; ``http://`` when
    it names no scheme. BadInput when there is none, or it is not an http(s) URL."""
    from .errors import BadInput

    url = (given or environment.variable(variable).raw).strip().rstrip("/")
    if not url:
        raise BadInput(f"no {server} URL: set {variable} (`mlcp stack up` does) or pass {flag}")
    if "://" not in url:
        url = f"http://{url}"
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest:
        raise BadInput(f"not an http(s) URL for {server}: {url!r}")
    return url


def mlcp_command(*words: str) -> str:
    """An ``mlcp`` command line a person can paste into the shell they ran ``mlcp`` from:
    ``mlcp ...`` when the ``mlcp`` on their PATH is this environment's, else this
    environment's launcher by its path (``.venv/bin/mlcp ...``, relative to the current
    folder when under it), else ``python -m steps.cli ...`` with this interpreter."""
    import shlex
    import shutil
    import sys

    launcher = Path(sys.executable).parent / "mlcp"
    on_path = shutil.which("mlcp")
    if on_path and (not launcher.is_file() or Path(on_path).resolve() == launcher.resolve()):
        head = "mlcp"
    elif launcher.is_file():
        try:
            head = str(launcher.absolute().relative_to(Path.cwd()))
        except ValueError:
            head = str(launcher)
        head = shlex.quote(head)
    else:
        head = f"{shlex.quote(sys.executable)} -m steps.cli"
    return " ".join([head, *(shlex.quote(w) for w in words)])


def actor() -> str:
    """Who is acting: ``$MLCP_ACTOR`` (the templates set it), else user@host."""
    explicit = MLCP_ACTOR.get()
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry, e.g. an arbitrary uid in a container
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def argo_context() -> dict[str, str]:
    """The Argo workflow this process runs in, when the template passed it down."""
    found = {}
    for key, variable in (
        ("workflow_name", ARGO_WORKFLOW_NAME),
        ("workflow_uid", ARGO_WORKFLOW_UID),
    ):
        value = variable.get()
        if value:
            found[key] = value
    return found


# A test hook, for the crash test of promote (tests/test_backends.py): a `mlcp promote` with
# this variable set sleeps that many seconds once its move records are open and before any
# alias is written, so the test can kill it at that known point. Unset, it does nothing.
PAUSE_AFTER_RECORD_VARIABLE = MLCP_TEST_PAUSE_AFTER_RECORD_S.name


def test_hook_pause_after_record() -> None:
    import time

    seconds = MLCP_TEST_PAUSE_AFTER_RECORD_S.get()
    if seconds:
        time.sleep(seconds)
