"""MLflow's REST API for the promote path, without importing ``mlflow``.

``mlcp promote``, ``rollback``, ``history`` and ``policy`` make a handful of small requests;
importing ``mlflow`` to make them cost more than the requests themselves (over a second on
2 cores). :class:`Client` speaks MLflow's documented REST API (``/api/2.0/mlflow/...``)
with the standard library's ``http.client`` over one kept-alive connection, and mirrors the
subset of ``mlflow.MlflowClient`` the core uses: the same method names, and results with the
same attributes (``model.aliases``, ``version.tags``, ``run.info.run_id``,
``run.data.tags``, ``page.token``), so :mod:`steps.registry.aliases`, :mod:`steps.registry.moves`,
:mod:`steps.decisions.gates` and :mod:`steps.registry.policy` work with either client. The stage
steps keep using the ``mlflow`` package (:func:`steps.records.tracking.client`).

Errors the server answers with become :class:`ApiError`, carrying MLflow's ``error_code``
(``RESOURCE_DOES_NOT_EXIST``, ...) like ``MlflowException`` does; :func:`error_code` reads
it from either. Authentication and TLS follow MLflow's client and its variables:
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (basic, each else from
``~/.mlflow/credentials``; they win over a token, as in MLflow), ``MLFLOW_TRACKING_TOKEN``
(bearer), ``MLFLOW_TRACKING_INSECURE_TLS``,
``MLFLOW_TRACKING_SERVER_CERT_PATH`` (a CA bundle) and ``MLFLOW_TRACKING_CLIENT_CERT_PATH``
(a client certificate with its key). A 401 or 403 raises :class:`Refused`, a bad input (exit
2) whose message names the variables to set or the user that was refused. Requests that
fail with 429 or 5xx, or cannot connect, are retried ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
times with MLflow's backoff variable; each waits at most ``MLFLOW_HTTP_REQUEST_TIMEOUT``
seconds. With ``MLCP_REST_TRACE=FILE`` every call is appended to FILE as one JSON line (the
bench replays a rollback's calls from it to measure the floor).

Why by hand: no library offers MLflow's REST API without importing ``mlflow`` itself.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from . import settings
from .environment import (
    MLCP_REST_TRACE,
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
    MLFLOW_TRACKING_CLIENT_CERT_PATH,
    MLFLOW_TRACKING_INSECURE_TLS,
    MLFLOW_TRACKING_PASSWORD,
    MLFLOW_TRACKING_SERVER_CERT_PATH,
    MLFLOW_TRACKING_TOKEN,
    MLFLOW_TRACKING_URI,
    MLFLOW_TRACKING_USERNAME,
)
from .errors import BadInput

API = "/api/2.0/mlflow/"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRUE = ("true", "1", "yes")


class ApiError(Exception):
    """The tracking server refused a request (``error_code`` as MLflow names it), or could
    not be reached (``error_code`` ``UNREACHABLE``)."""

    def __init__(self, message: str, error_code: str = "INTERNAL_ERROR", status: int = 0):
        super().__init__(message)
        self.error_code = error_code
        self.status = status


AUTH_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
REFUSED_CODES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}


class Refused(ApiError, BadInput):
    """The tracking server refused who we are (401) or what this user may do (403): a
    configuration error, so exit 2 (:mod:`steps.base.errors`); Argo does not retry it."""


def refused_message(status: int, what: str, tracking_uri: str) -> str:
    """Why MLflow at ``tracking_uri`` refused ``what`` with ``status`` (401 or 403), naming
    the variables to set or the user that was refused."""
    username, password = credentials()
    where = f"MLflow at {tracking_uri}"
    if status == 403:
        return (
            f"{where} denied {what} to user {username!r}: permission denied. That user may "
            "not make this change; the steps run as the pipeline user "
            f"({' and '.join(AUTH_VARIABLES)})"
        )
    missing = [
        var for var, value in zip(AUTH_VARIABLES, (username, password), strict=True) if not value
    ]
    if missing:
        return (
            f"{where} requires authentication and {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: set {' and '.join(AUTH_VARIABLES)} "
            "to the pipeline user's credentials (`mlcp stack up --auth` writes them into "
            ".mlcp/env; in the cluster they come from the credentials Secret)"
        )
    return (
        f"{where} refused the credentials of user {username!r} (from "
        f"{' and '.join(AUTH_VARIABLES)}): wrong user name or password"
    )


def refusal(exc: BaseException, tracking_uri: str | None = None) -> Refused | None:
    """The :class:`Refused` error for an authentication or permission refusal, from this
    module's errors or an ``MlflowException`` (the ``mlflow`` package's path: the stage
    steps), looked for along the exception's causes; None for anything else."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, Refused):
            return exc
        code = error_code(exc)
        status = next((s for s, c in REFUSED_CODES.items() if c == code), None)
        if status is not None:
            uri = tracking_uri or MLFLOW_TRACKING_URI.get() or "the tracking server"
            what = "a request"
            match = re.search(r"endpoint (\S+) failed", str(exc))
            if match:
                what = match.group(1)
            return Refused(refused_message(status, what, uri), code, status)
        exc = exc.__cause__ or exc.__context__
    return None


def error_code(exc: BaseException) -> str | None:
    """MLflow's error code of a refused request, from this module's :class:`ApiError` or
    an ``MlflowException`` (matched by name: ``mlflow`` is not imported here); None for
    any other exception."""
    if isinstance(exc, ApiError) or any(c.__name__ == "MlflowException" for c in type(exc).__mro__):
        return getattr(exc, "error_code", None) or "INTERNAL_ERROR"
    return None


# ---------------------------------------------------------------------------- entities
# The attributes of mlflow.entities that the core reads, and nothing else.


def _tags(items) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in items or ()}


def _tag_list(tags) -> list[dict[str, str]]:
    return [{"key": k, "value": str(v)} for k, v in (tags or {}).items()]


@dataclass
class Param:
    key: str
    value: str


@dataclass
class Metric:
    key: str
    value: float
    timestamp: int
    step: int = 0


@dataclass
class RegisteredModel:
    name: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict) -> RegisteredModel:
        return cls(
            d["name"],
            d.get("description", ""),
            _tags(d.get("tags")),
            {a["alias"]: str(a["version"]) for a in d.get("aliases", ())},
        )


@dataclass
class ModelVersion:
    name: str
    version: str
    run_id: str = ""
    source: str = ""
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict) -> ModelVersion:
        return cls(
            d["name"],
            str(d["version"]),
            d.get("run_id", ""),
            d.get("source", ""),
            d.get("description", ""),
            _tags(d.get("tags")),
            list(d.get("aliases", ())),
        )


@dataclass
class Experiment:
    experiment_id: str
    name: str
    lifecycle_stage: str = "active"
    artifact_location: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict) -> Experiment:
        return cls(
            d["experiment_id"],
            d["name"],
            d.get("lifecycle_stage", "active"),
            d.get("artifact_location", ""),
            _tags(d.get("tags")),
        )


@dataclass
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    status: str
    start_time: int
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str


@dataclass
class RunData:
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass
class Run:
    info: RunInfo
    data: RunData

    @classmethod
    def from_json(cls, d: dict) -> Run:
        info, data = d["info"], d.get("data", {})
        return cls(
            RunInfo(
                info["run_id"],
                info.get("experiment_id", ""),
                info.get("run_name", ""),
                info.get("status", ""),
                int(info.get("start_time", 0)),
                int(info["end_time"]) if info.get("end_time") else None,
                info.get("artifact_uri", ""),
                info.get("lifecycle_stage", "active"),
            ),
            RunData(
                _tags(data.get("tags")),
                _tags(data.get("params")),
                {m["key"]: m["value"] for m in data.get("metrics", ())},
            ),
        )


class PagedList(list):
    """A page of results with the ``token`` of the next one (None on the last)."""

    def __init__(self, items, token: str | None):
        super().__init__(items)
        self.token = token or None


# ---------------------------------------------------------------------------- the client


def credentials() -> tuple[str | None, str | None]:
    """The basic-auth user and password as MLflow's client finds them: each from its
    variable (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``), else from the ``[mlflow]`` section
    of ``~/.mlflow/credentials`` (keys ``mlflow_tracking_username``/``_password``), the file
    MLflow's basic-auth documentation has people write."""
    from_file: dict[str, str] = {}
    path = Path.home() / ".mlflow" / "credentials"
    if path.is_file():
        import configparser

        parser = configparser.ConfigParser()
        parser.read(path)
        if parser.has_section("mlflow"):
            from_file = dict(parser["mlflow"])
    found = []
    for var in (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD):
        found.append(var.get() or from_file.get(var.name.lower()) or None)
    return found[0], found[1]


class Client:
    """The MLflow REST API on ``tracking_uri`` (``$MLFLOW_TRACKING_URI`` when not given)."""

    def __init__(self, tracking_uri: str | None = None):
        self.tracking_uri = (tracking_uri or settings.tracking_uri()).rstrip("/")
        parts = urllib.parse.urlsplit(self.tracking_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) tracking server: {self.tracking_uri!r}")
        self._parts = parts
        self._prefix = parts.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None
        self._experiments: dict[str, Experiment] = {}  # by name, as a search just read them
        self.timeout = MLFLOW_HTTP_REQUEST_TIMEOUT.get()
        self.retries = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
        self.backoff = MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()
        self.headers = {"Content-Type": "application/json", "User-Agent": "mlcp"}
        username, password = credentials()
        token = MLFLOW_TRACKING_TOKEN.get()
        if username and password:  # as MLflow's client: basic credentials win over a token
            basic = base64.standard_b64encode(f"{username}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        elif token:
            self.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"rest.Client({self.tracking_uri!r})"

    # -- transport

    def _ssl_context(self):
        import ssl

        context = ssl.create_default_context(cafile=MLFLOW_TRACKING_SERVER_CERT_PATH.get())
        if MLFLOW_TRACKING_INSECURE_TLS.get():
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        client_cert = MLFLOW_TRACKING_CLIENT_CERT_PATH.get()
        if client_cert:
            context.load_cert_chain(client_cert)
        return context

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            host, port = self._parts.hostname, self._parts.port
            if self._parts.scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=self._ssl_context()
                )
            else:
                self._conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        """One request, retried on a dropped connection, 429 and 5xx."""
        attempt = 0
        while True:
            try:
                conn = self._connection()
                conn.request(method, self._prefix + path, body=body, headers=self.headers)
                response = conn.getresponse()
                status, data = response.status, response.read()
                if response.will_close:
                    self.close()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt >= self.retries:
                    raise ApiError(
                        f"cannot reach the tracking server {self.tracking_uri}: {exc}",
                        "UNREACHABLE",
                    ) from exc
            else:
                if status not in RETRY_STATUS or attempt >= self.retries:
                    return status, data
            time.sleep(min(self.backoff * (2**attempt), 30.0) if attempt else 0.1)
            attempt += 1

    def call(self, method: str, endpoint: str, body: dict | None = None) -> dict:
        """``method`` on ``/api/2.0/mlflow/<endpoint>``: GET sends ``body`` as the query,
        anything else as JSON (as MLflow's client does). The decoded answer, or ApiError."""
        path = API + endpoint
        payload = None
        if method == "GET":
            if body:
                path += "?" + urllib.parse.urlencode(body, doseq=True)
        else:
            payload = json.dumps(body or {}).encode()
        status, data = self._send(method, path, payload)
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            answer = {"message": data[:500].decode(errors="replace")}
        if status >= 400 or not isinstance(answer, dict):
            message = answer.get("message") if isinstance(answer, dict) else None
            code = answer.get("error_code") if isinstance(answer, dict) else None
            fallback = "RESOURCE_DOES_NOT_EXIST" if status == 404 else "INTERNAL_ERROR"
            if status in REFUSED_CODES:
                what = f"{method} {endpoint}"
                raise Refused(
                    refused_message(status, what, self.tracking_uri), REFUSED_CODES[status], status
                )
            raise ApiError(
                f"{method} {endpoint} answered {status}: {message or data[:300]!r}",
                code or fallback,
                status,
            )
        trace = MLCP_REST_TRACE.get()
        if trace:  # one JSON line per call: what the bench's bare REST floor replays
            line = {"method": method, "endpoint": endpoint, "body": body}
            if endpoint == "runs/create":
                line["result_run_id"] = answer["run"]["info"]["run_id"]
            with open(trace, "a") as handle:
                handle.write(json.dumps(line) + "\n")
        return answer

    def _page(self, method: str, endpoint: str, body: dict, page_token, entity) -> PagedList:
        """One page of a search: ``entity`` objects from the answer's one list."""
        if page_token:
            body["page_token"] = page_token
        answer = self.call(method, endpoint, body)
        key = next((k for k, v in answer.items() if isinstance(v, list)), None)
        items = [entity.from_json(item) for item in answer.get(key, ())] if key else []
        return PagedList(items, answer.get("next_page_token"))

    # -- registered models and versions

    def get_registered_model(self, name: str) -> RegisteredModel:
        answer = self.call("GET", "registered-models/get", {"name": name})
        return RegisteredModel.from_json(answer["registered_model"])

    def search_registered_models(
        self, filter_string: str | None = None, max_results: int = 100, page_token=None
    ) -> PagedList:
        body: dict = {"max_results": max_results}
        if filter_string:
            body["filter"] = filter_string
        return self._page("GET", "registered-models/search", body, page_token, RegisteredModel)

    def get_model_version(self, name: str, version: str | int) -> ModelVersion:
        answer = self.call("GET", "model-versions/get", {"name": name, "version": str(version)})
        return ModelVersion.from_json(answer["model_version"])

    def set_registered_model_alias(self, name: str, alias: str, version: str | int) -> None:
        self.call(
            "POST",
            "registered-models/alias",
            {"name": name, "alias": alias, "version": str(version)},
        )

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self.call("DELETE", "registered-models/alias", {"name": name, "alias": alias})

    def set_registered_model_tag(self, name: str, key: str, value) -> None:
        self.call(
            "POST", "registered-models/set-tag", {"name": name, "key": key, "value": str(value)}
        )

    def set_model_version_tag(self, name: str, version: str | int, key: str, value) -> None:
        body = {"name": name, "version": str(version), "key": key, "value": str(value)}
        self.call("POST", "model-versions/set-tag", body)

    # -- experiments

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment ``name`` (as this client's last search of experiments found it,
        one round trip fewer for a promote that has just read the history)."""
        if name in self._experiments:
            return self._experiments[name]
        try:
            answer = self.call("GET", "experiments/get-by-name", {"experiment_name": name})
        except ApiError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return Experiment.from_json(answer["experiment"])

    def create_experiment(self, name: str, artifact_location=None, tags=None) -> str:
        body: dict = {"name": name, "tags": _tag_list(tags)}
        if artifact_location:
            body["artifact_location"] = artifact_location
        return self.call("POST", "experiments/create", body)["experiment_id"]

    def restore_experiment(self, experiment_id: str) -> None:
        self.call("POST", "experiments/restore", {"experiment_id": experiment_id})

    def set_experiment_tag(self, experiment_id: str, key: str, value) -> None:
        body = {"experiment_id": experiment_id, "key": key, "value": str(value)}
        self.call("POST", "experiments/set-experiment-tag", body)

    def search_experiments(
        self, view_type=None, max_results: int = 1000, filter_string=None, order_by=None
    ) -> PagedList:
        found, token = [], None
        while True:  # MlflowClient.search_experiments pages through all of them too
            body: dict = {"max_results": max_results}
            if filter_string:
                body["filter"] = filter_string
            page = self._page("POST", "experiments/search", body, token, Experiment)
            self._experiments.update((e.name, e) for e in page)
            found += page
            token = page.token
            if not token:
                return PagedList(found, None)

    # -- runs

    def create_run(self, experiment_id: str, start_time=None, tags=None, run_name=None) -> Run:
        tags = dict(tags or {})
        body = {
            "experiment_id": str(experiment_id),
            # what MlflowClient sends: the user tag, else "unknown" (a deprecated field)
            "user_id": tags.get("mlflow.user", "unknown"),
            "start_time": start_time or int(time.time() * 1000),
            "tags": _tag_list(tags),
        }
        if run_name:
            body["run_name"] = run_name
        return Run.from_json(self.call("POST", "runs/create", body)["run"])

    def get_run(self, run_id: str) -> Run:
        return Run.from_json(self.call("GET", "runs/get", {"run_id": run_id})["run"])

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        """Params, tags and metrics in one request (entities with ``key``/``value``)."""
        body = {
            "run_id": run_id,
            "params": [{"key": p.key, "value": str(p.value)} for p in params],
            "tags": [{"key": t.key, "value": str(t.value)} for t in tags],
            "metrics": [
                {
                    "key": m.key,
                    "value": m.value,
                    "timestamp": m.timestamp,
                    "step": getattr(m, "step", 0),
                }
                for m in metrics
            ],
        }
        self.call("POST", "runs/log-batch", body)

    def set_tag(self, run_id: str, key: str, value) -> None:
        self.call("POST", "runs/set-tag", {"run_id": run_id, "key": key, "value": str(value)})

    def set_terminated(self, run_id: str, status: str = "FINISHED", end_time=None) -> None:
        body = {"run_id": run_id, "status": status, "end_time": end_time or int(time.time() * 1000)}
        self.call("POST", "runs/update", body)

    def search_runs(
        self,
        experiment_ids,
        filter_string: str = "",
        run_view_type=None,
        max_results: int = 1000,
        order_by=None,
        page_token=None,
    ) -> PagedList:
        body: dict = {
            "experiment_ids": [str(e) for e in experiment_ids],
            "filter": filter_string,
            "max_results": max_results,
        }
        if order_by:
            body["order_by"] = list(order_by)
        return self._page("POST", "runs/search", body, page_token, Run)

    # -- artifacts

    def download_artifacts(self, uri: str, dest: str | Path) -> Path:
        """Download a file or folder named by ``runs:/RUN/PATH``, ``mlflow-artifacts:/...``
        (through the server's artifact proxy) or a local path into ``dest``; the path of the
        downloaded copy. Other stores (``s3://`` written directly) go through ``mlflow``."""
        dest = Path(dest)
        if uri.startswith("runs:/"):
            run_id, _, rel = uri[len("runs:/") :].partition("/")
            base = self.get_run(run_id).info.artifact_uri.rstrip("/")
            uri = f"{base}/{rel}" if rel else base
        parsed = urllib.parse.urlsplit(uri)
        if parsed.scheme == "mlflow-artifacts":
            return self._proxy_download(parsed.path.lstrip("/"), dest)
        if parsed.scheme in ("", "file"):
            source = Path(urllib.parse.unquote(parsed.path))
            target = dest / source.name
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copyfile(source, target)
            return target
        import mlflow.artifacts  # another artifact store: mlflow's own clients

        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))

    def _proxy_download(self, path: str, dest: Path) -> Path:
        """``path`` from the server's artifact proxy: a folder (it lists files) is fetched
        file by file."""
        target = dest / path.rsplit("/", 1)[-1]
        query = urllib.parse.urlencode({"path": path})
        status, data = self._send("GET", f"{ARTIFACTS_API}?{query}", None)
        files = (json.loads(data or b"{}").get("files") or []) if status == 200 else []
        if files:
            target.mkdir(parents=True, exist_ok=True)
            for entry in files:
                self._proxy_download(f"{path}/{entry['path'].rsplit('/', 1)[-1]}", target)
            return target
        status, data = self._send("GET", f"{ARTIFACTS_API}/{urllib.parse.quote(path)}", None)
        if status != 200:
            raise ApiError(
                f"cannot download mlflow-artifacts:/{path}: {status} {data[:200]!r}",
                "RESOURCE_DOES_NOT_EXIST" if status == 404 else "INTERNAL_ERROR",
                status,
            )
        target.write_bytes(data)
        return target


def param_type(client):
    """The param entity ``client.log_batch`` takes: this module's for a :class:`Client`,
    ``mlflow.entities.Param`` for an ``MlflowClient``."""
    if isinstance(client, Client):
        return Param
    from mlflow.entities import Param as MlflowParam

    return MlflowParam


def metric_type(client):
    """The metric entity ``client.log_batch`` takes (``key, value, timestamp, step``), as
    :func:`param_type`."""
    if isinstance(client, Client):
        return Metric
    from mlflow.entities import Metric as MlflowMetric

    return MlflowMetric


def download(client, uri: str, dest: str | Path) -> Path:
    """An artifact (file or folder) downloaded into ``dest`` through ``client``: the REST
    client's own download, or ``mlflow.artifacts`` for an ``MlflowClient``."""
    if isinstance(client, Client):
        return client.download_artifacts(uri, dest)
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))


def each(client, calls) -> list:
    """Call each of ``calls`` (functions of a client) and return their results in order:
    concurrently for a :class:`Client`, each on its own connection (independent writes, such
    as the records of one operation, in one round trip's time), one after the other for any
    other client. Every call runs; the first failure is raised afterwards."""
    calls = list(calls)
    if not isinstance(client, Client) or len(calls) < 2:
        return [call(client) for call in calls]
    import threading

    results: list = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def work(index: int) -> None:
        mine = client if index == 0 else Client(client.tracking_uri)
        try:
            results[index] = calls[index](mine)
        except BaseException as exc:  # raised below, in the caller's thread
            errors[index] = exc
        finally:
            if mine is not client:
                mine.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, len(calls))]
    for thread in threads:
        thread.start()
    work(0)
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results
