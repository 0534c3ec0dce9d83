"""MLflow's own authentication (its ``basic-auth`` app): the users, their permissions, and
the local stack's credentials.

Three users, whatever runs the server (``mlcp stack up --auth`` here, the chart's hook Job
in a cluster):

- the **admin** (MLflow creates it at the first start from ``MLFLOW_AUTH_ADMIN_PASSWORD``);
  only this module uses it, to create the other two; the steps never hold it;
- the **pipeline** user, whose credentials the steps read from
  ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``;
- a **read-only** user for people who browse the UI.

Permissions (:data:`ROLES`), on top of ``default_permission = NO_PERMISSIONS`` (a user
created later by someone else sees nothing until granted):

- the pipeline's role grants EDIT on every experiment, registered model and prompt. EDIT is
  what the steps do: create runs and log to them, register versions, set aliases and tags.
  It cannot delete anything, nor grant permissions. MLflow makes the creator of an
  experiment or model its MANAGE owner, so the pipeline may also delete aliases (a rollback
  that empties ``previous``) of the models it created itself, which is every model the
  stages train. A model someone else created keeps EDIT only: clearing one of its aliases
  is refused.
- the read-only role grants READ on experiments, registered models, prompts and scorers:
  it sees everything and changes nothing that exists. Without MLflow workspaces an
  authenticated user may still create a *new* experiment or model of its own (MLflow's
  rule); it cannot touch the pipeline's.

MLflow has no per-alias permission (mlflow issue 24742): the pipeline's EDIT on a model
includes moving ``live``. What keeps ``live`` honest is that only the pipeline holds that
user, and ``mlcp audit`` finds moves that no record explains.

The local stack keeps the credentials under ``<home>/mlflow/auth`` (a folder of mode 700,
files of mode 600): the admin's there only, the pipeline's also in ``.mlcp/env``, the
read-only user's printed once by the ``up`` that creates it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..base.environment import (
    MLCP_READ_ONLY_PASSWORD,
    MLCP_READ_ONLY_USERNAME,
    MLFLOW_AUTH_ADMIN_PASSWORD,
    MLFLOW_AUTH_ADMIN_USERNAME,
    MLFLOW_TRACKING_PASSWORD,
    MLFLOW_TRACKING_USERNAME,
)
from ..base.errors import BadInput, MlcpError

ADMIN, PIPELINE, READ_ONLY = "admin", "pipeline", "read-only"
USERNAMES = {ADMIN: "admin", PIPELINE: "mlcp-pipeline", READ_ONLY: "mlcp-read-only"}
DEFAULT_PERMISSION = "NO_PERMISSIONS"
WORKSPACE = "default"  # without MLflow workspaces every role lives in the default one
# role name -> user it is given to, and {resource type: permission} on every resource ("*")
ROLES = {
    "mlcp-pipeline": (
        PIPELINE,
        {"experiment": "EDIT", "registered_model": "EDIT", "prompt": "EDIT"},
    ),
    "mlcp-read-only": (
        READ_ONLY,
        {"experiment": "READ", "registered_model": "READ", "prompt": "READ", "scorer": "READ"},
    ),
}
# The variables each user's credentials are read from (the chart's Secrets give them so).
ADMIN_ENV = (MLFLOW_AUTH_ADMIN_USERNAME.name, MLFLOW_AUTH_ADMIN_PASSWORD.name)
PIPELINE_ENV = (MLFLOW_TRACKING_USERNAME.name, MLFLOW_TRACKING_PASSWORD.name)
READ_ONLY_ENV = (MLCP_READ_ONLY_USERNAME.name, MLCP_READ_ONLY_PASSWORD.name)
MIN_PASSWORD = 12  # MLflow refuses shorter passwords


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


# ------------------------------------------------------------------ the local stack's files


def auth_dir(home: Path) -> Path:
    return home / "mlflow" / "auth"


def enabled(home: Path) -> bool:
    """Whether this stack folder runs MLflow with authentication (``up --auth`` set it up)."""
    return (auth_dir(home) / f"{ADMIN}.json").is_file()


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, readable by its owner only from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def stored(home: Path, who: str) -> Credentials:
    data = json.loads((auth_dir(home) / f"{who}.json").read_text())
    return Credentials(data["username"], data["password"])


def prepare(home: Path, auth: bool | None, mlflow_running: bool) -> bool:
    """Decide whether this ``up`` runs MLflow with authentication: ``auth`` None keeps what
    the stack folder was set up with. Creates the credentials on the first ``--auth``;
    refuses a switch that would drop authentication, or one a running MLflow cannot take."""
    has = enabled(home)
    if auth is None:
        auth = has
    if has and not auth:
        raise BadInput(
            f"the stack in {home} runs MLflow with authentication (set up by "
            f"`mlcp stack up --auth`); it will not start it open. Run `mlcp stack up` without "
            f"--no-auth, or remove {auth_dir(home)} to drop authentication"
        )
    if auth and not has:
        if mlflow_running:
            raise BadInput(
                "MLflow already runs without authentication in this stack: run "
                "`mlcp stack down` first, then `mlcp stack up --auth`"
            )
        folder = auth_dir(home)
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        ini = (
            "[mlflow]\n"
            f"default_permission = {DEFAULT_PERMISSION}\n"
            f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
            f"admin_username = {USERNAMES[ADMIN]}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        write_private(folder / "basic_auth.ini", ini)
        write_private(folder / "secret_key", secrets.token_urlsafe(32))
        for who in (PIPELINE, READ_ONLY, ADMIN):  # the admin's last: it marks the folder ready
            creds = {"username": USERNAMES[who], "password": secrets.token_urlsafe(24)}
            write_private(folder / f"{who}.json", json.dumps(creds) + "\n")
    return auth


def server_env(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The tracking server's environment for the basic-auth app of this stack folder."""
    folder = auth_dir(home)
    return {
        **env,
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": stored(home, ADMIN).password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": (folder / "secret_key").read_text().strip(),
    }


SERVER_ARGS = ("--app-name", "basic-auth")


def client_env(home: Path) -> dict[str, str]:
    """What the steps need to authenticate: the pipeline user's credentials."""
    creds = stored(home, PIPELINE)
    return {PIPELINE_ENV[0]: creds.username, PIPELINE_ENV[1]: creds.password}


# ------------------------------------------------------------------ users and roles


def _admin_client(tracking_uri: str, admin: Credentials):
    """MLflow's auth client acting as ``admin`` (not as whoever the environment names)."""
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request, verify_rest_response

    class AdminClient(AuthServiceClient):
        def _request(self, endpoint, method, *, expected_status: int = 200, **kwargs):
            creds = MlflowHostCreds(tracking_uri, username=admin.username, password=admin.password)
            resp = http_request(creds, endpoint, method, **kwargs)
            resp = verify_rest_response(resp, endpoint, expected_status=expected_status)
            return resp.json() if resp.status_code != 204 and resp.content else {}

    return AdminClient(tracking_uri)


def _missing(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def provision(
    tracking_uri: str,
    admin: Credentials,
    users: dict[str, Credentials],
    wait: float = 0.0,
) -> set[str]:
    """Create (or bring back to what is asked) the pipeline and read-only users, their roles
    and the roles' permissions; idempotent, so it runs at every ``up`` and every chart
    upgrade. ``users``: {PIPELINE: ..., READ_ONLY: ...}. ``wait``: seconds to keep retrying
    while the server is not answering yet (a hook Job may start before MLflow is ready).
    Returns which of ``users`` it created."""
    for who, creds in users.items():
        if len(creds.password) < MIN_PASSWORD:
            raise BadInput(f"the {who} user's password is shorter than {MIN_PASSWORD} characters")
    client = _admin_client(tracking_uri, admin)
    deadline = time.monotonic() + wait
    while True:
        try:
            roles = {role.name: role for role in client.list_roles(WORKSPACE)}
            break
        except Exception as exc:
            if getattr(exc, "error_code", None) in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                raise BadInput(
                    f"MLflow at {tracking_uri} refused the admin credentials of "
                    f"{admin.username!r}: {exc}"
                ) from None
            if time.monotonic() > deadline:
                raise MlcpError(f"cannot set up MLflow's users at {tracking_uri}: {exc}") from exc
            time.sleep(3)
    created = set()
    for who, creds in users.items():
        try:
            client.get_user(creds.username)
        except Exception as exc:
            if not _missing(exc):
                raise
            client.create_user(creds.username, creds.password)
            created.add(who)
        else:  # the password asked for wins (a rotated Secret)
            client.update_user_password(creds.username, creds.password)
    for name, (who, grants) in ROLES.items():
        if who not in users:
            continue
        role = roles.get(name) or client.create_role(WORKSPACE, name, f"mlcp: the {who} user")
        have = {
            (p.resource_type, p.resource_pattern): p for p in client.list_role_permissions(role.id)
        }
        for resource_type, permission in grants.items():
            found = have.pop((resource_type, "*"), None)
            if found is None:
                client.add_role_permission(role.id, resource_type, "*", permission)
            elif found.permission != permission:
                client.update_role_permission(found.id, permission)
        for extra in have.values():  # nothing beyond what is declared here
            client.remove_role_permission(extra.id)
        username = users[who].username
        if name not in {r.name for r in client.list_user_roles(username)}:
            client.assign_role(username, role.id)
    return created


def provision_stack(home: Path, tracking_uri: str) -> set[str]:
    """The local stack's users, from its credential files; which it created."""
    return provision(
        tracking_uri,
        stored(home, ADMIN),
        {PIPELINE: stored(home, PIPELINE), READ_ONLY: stored(home, READ_ONLY)},
    )


def from_env(names: tuple[str, str], who: str) -> Credentials:
    """Credentials from two settings, each its variable or the file ``<NAME>_FILE`` names
    (steps/base/secrets.py); for the pipeline user, else MLflow's credentials file, as MLflow's
    client reads them. BadInput naming those that are missing."""
    from ..base import rest, secrets

    values = [secrets.read(name) or "" for name in names]
    if names == PIPELINE_ENV and not all(values):
        values = [a or b or "" for a, b in zip(values, rest.credentials(), strict=True)]
    missing = [secrets.source(name) for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise BadInput(f"the {who} user's credentials are missing: set {' and '.join(missing)}")
    return Credentials(*values)


def provision_from_env(wait: float) -> None:
    """``mlcp mlflow-users``: the chart's hook Job, every credential from the environment
    (the Secrets the values name), nothing on the command line."""
    from ..base import settings

    provision(
        settings.tracking_uri(),
        from_env(ADMIN_ENV, ADMIN),
        {PIPELINE: from_env(PIPELINE_ENV, PIPELINE), READ_ONLY: from_env(READ_ONLY_ENV, READ_ONLY)},
        wait=wait,
    )


def read_only_notice(home: Path) -> str:
    """What ``up`` prints once, when it creates the users: the read-only user for the UI."""
    creds = stored(home, READ_ONLY)
    return (
        f"MLflow runs with authentication. For the UI, the read-only user {creds.username!r} "
        f"with password {creds.password} (printed once; kept in "
        f"{auth_dir(home) / (READ_ONLY + '.json')}, mode 600). The steps use the pipeline user "
        "from the environment file; the admin's credentials stay in that folder."
    )
