"""Triton Inference Server: the model repository layout and a client for explicit model control.

A *slot* is a Triton model name (``<model>-staged``, ``<model>-live``); its versions are the
MLflow version numbers. ``write_entry`` puts a version into the repository (a local folder
or an ``s3://`` prefix), ``Triton.load`` makes the slot serve exactly that version (also an
older one: rollback), ``Triton.infer`` answers which version computed the logits.

The same layout serves two backends: ``python`` (a ``model.py`` running the ONNX file with
onnxruntime; the only backend the local stack's tritonserver has) and ``onnxruntime`` (the
official Triton image). tritonclient and numpy are imported inside functions only.

**The repository is the desired state.** Each slot's ``config.pbtxt`` pins the one version the
slot should serve (``version_policy { specific { versions: [v] } }``), and tritonserver runs
with ``--model-control-mode=explicit --load-model=*`` (:data:`SERVER_ARGS`), so a restarted or
added replica loads every slot at its pinned version with no step running. A new version is
loaded on every replica first (:class:`Fleet`) and pinned only once all of them serve it
(:func:`pin`), so a restart never brings up a version that was refused.

Why explicit control with ``--load-model=*`` and not poll mode: poll mode forbids the load
API the steps rely on (a switch must be confirmed by the server before an alias moves, and
a failed load must leave the old version serving), and it reads whatever lies in the
repository at each poll, also an S3 entry whose upload is half done. With explicit control
the server reads a slot only at start and when asked to.

**Replicas.** ``$MLCP_TRITON_REPLICAS`` (:data:`REPLICAS_ENV`) names every replica the steps
must load: comma-separated ``[http://]HOST:HTTP_PORT[/GRPC_PORT]`` entries; a HOST that
resolves to several addresses (a headless Service) stands for each of them. Unset: the one
server at ``$MLCP_TRITON_URL`` (loads over ``$MLCP_TRITON_GRPC_URL``). Inference keeps going
through ``$MLCP_TRITON_URL`` (the Service).

**The control key.** The servers restrict their model-repository API (load, unload, the
repository index) to requests carrying the header :data:`CONTROL_HEADER` with the value of
``$MLCP_TRITON_CONTROL_KEY`` (:data:`CONTROL_KEY_ENV`); every such call of this client
sends it. Inference, health and metadata stay open.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import s3, settings
from ..base.environment import (
    MLCP_TRITON_CONTROL_KEY,
    MLCP_TRITON_GRPC_URL,
    MLCP_TRITON_REPLICAS,
    MLCP_TRITON_REPOSITORY,
)
from ..base.errors import BadInput, MlcpError
from ..registry.backends import Served

if TYPE_CHECKING:
    import numpy as np

BACKENDS = ("python", "onnxruntime")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

CONFIG_FILE = "config.pbtxt"
ONNX_FILE = "model.onnx"
PYTHON_FILE = "model.py"
LIVE_TIMEOUT = 3.0

REPLICAS_ENV = MLCP_TRITON_REPLICAS.name
CONTROL_KEY_ENV = MLCP_TRITON_CONTROL_KEY.name
# The header that carries the key. Triton's gRPC front end expects restricted-protocol
# headers with this prefix (seen on tritonserver 2.51: "expecting header
# 'triton-grpc-protocol-<key>'"); the HTTP front end expects the bare name.
CONTROL_HEADER = "mlcp-control-key"
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
# What makes the repository the desired state: explicit control, every slot loaded at start
# (at the version its config pins). The local stack, the image and the chart start with these.
SERVER_ARGS = ("--model-control-mode=explicit", "--load-model=*")


def restricted_args(key: str) -> list[str]:
    """The tritonserver arguments that close the model-repository API to all but ``key``."""
    return [
        f"--http-restricted-api=model-repository:{CONTROL_HEADER}={key}",
        f"--grpc-restricted-protocol=model-repository:{CONTROL_HEADER}={key}",
    ]


def control_key() -> str | None:
    """The model-control key: ``$MLCP_TRITON_CONTROL_KEY``, else the file
    ``$MLCP_TRITON_CONTROL_KEY_FILE`` names (steps/base/secrets.py)."""
    from ..base import secrets

    return secrets.read(CONTROL_KEY_ENV)


def _control_headers(grpc: bool) -> dict[str, str] | None:
    key = control_key()
    if not key:
        return None
    return {(GRPC_HEADER_PREFIX if grpc else "") + CONTROL_HEADER: key}


def url_option():
    """The ``--triton-url`` option every stage that talks to Triton declares."""
    from ..spec.declare import option

    return option(None, help="Triton HTTP URL (empty: $MLCP_TRITON_URL)")


# Where this process last wrote each slot (see Triton._slot_config).
_written: dict[str, str] = {}


# ------------------------------------------------------------------------ the repository


def _check_slot(slot: str) -> str:
    if not isinstance(slot, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", slot):
        raise BadInput(f"not a Triton model (slot) name: {slot!r}")
    return slot


def _check_version(version: str | int) -> str:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise BadInput(f"a Triton model version is a positive integer, got {version!r}")
    return str(int(text))


def model_config(
    slot: str,
    *,
    backend: str,
    image_size: int,
    channels: int = 3,
    num_classes: int,
    max_batch_size: int = 64,
    dynamic_batching: bool = True,
) -> dict:
    """The slot's model configuration, as the JSON form of Triton's ModelConfig.
    ``dynamic_batching=False`` exists for the benchmark that measures what it brings."""
    if backend not in BACKENDS:
        raise BadInput(f"unknown Triton backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    for name, value in (
        ("image_size", image_size),
        ("channels", channels),
        ("num_classes", num_classes),
        ("max_batch_size", max_batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInput(f"{name} must be a positive integer, got {value!r}")
    config: dict = {"name": _check_slot(slot)}
    if backend == "onnxruntime":
        config["platform"] = "onnxruntime_onnx"
    config["backend"] = backend
    config["max_batch_size"] = max_batch_size
    config["input"] = [
        {"name": INPUT_NAME, "data_type": "TYPE_FP32", "dims": [channels, image_size, image_size]}
    ]
    config["output"] = [{"name": OUTPUT_NAME, "data_type": "TYPE_FP32", "dims": [num_classes]}]
    if dynamic_batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": 2000}
    # Triton's default; write_entry and pin replace it by the one version the slot serves.
    config["version_policy"] = {"latest": {"num_versions": 1}}
    if backend == "python":
        config["instance_group"] = [{"kind": "KIND_CPU", "count": 1}]
        config["parameters"] = {"intra_op_threads": {"string_value": "1"}}
    return config


def write_entry(
    repository: str,
    slot: str,
    version: str | int,
    onnx_bytes: bytes,
    *,
    backend: str,
    image_size: int,
    channels: int = 3,
    num_classes: int,
    max_batch_size: int = 64,
    dynamic_batching: bool = True,
) -> str:
    """Write the version's folder ``<repository>/<slot>/<version>/`` (``model.onnx``, plus
    ``model.py`` for the python backend, and the version's own ``config.pbtxt``, pinned to it)
    to a local folder or an ``s3://bucket/prefix`` (the client of :mod:`steps.base.s3`). Returns
    the version's folder (a path, or an ``s3://`` URI).

    The slot's ``config.pbtxt`` (what the server loads at start) is written only for a new
    slot, pinned to this version; an existing slot keeps its pin until :func:`pin` moves it,
    after every replica serves the new version. So writing a version changes nothing a
    restarted server would serve.

    No half-written version is ever exposed. Locally the version is written to a temporary
    folder beside it and renamed into place (one atomic rename; a version written before is
    replaced). On S3, where a prefix cannot be renamed, the version's files are uploaded and
    the slot's config last. The servers run with explicit model control: they read a slot's
    folder only at start (the pinned version, complete) and when ``Triton.load`` asks them
    to, never by polling; ``Triton.load`` pins the one version it loads, so a load running
    meanwhile reads no other version folder.
    """
    config = model_config(
        slot,
        backend=backend,
        image_size=image_size,
        channels=channels,
        num_classes=num_classes,
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
    )
    version = _check_version(version)
    if not isinstance(onnx_bytes, bytes | bytearray) or not onnx_bytes:
        raise BadInput("onnx_bytes must be the (non-empty) bytes of an ONNX file")
    config_text = render_pbtxt(_pinned(config, version)).encode()
    files = {ONNX_FILE: bytes(onnx_bytes), CONFIG_FILE: config_text}
    if backend == "python":
        files[PYTHON_FILE] = (Path(__file__).with_name("triton_model.py")).read_bytes()
    new_slot = _read_config_text(repository, slot) is None
    if repository.startswith("s3://"):
        where = _write_s3(repository, slot, version, files)
    else:
        where = _write_local(Path(repository), slot, version, files)
    if new_slot:
        _put_config(repository, slot, config_text)
    _written[slot] = repository
    return where


def _pinned(config: dict, version: str) -> dict:
    return {**config, "version_policy": {"specific": {"versions": [int(version)]}}}


def version_config(repository: str, slot: str, version: str | int) -> dict:
    """The config written with ``version`` (an entry written before versions carried their
    own config: the slot's), pinned to it: what a load of that version sends."""
    version = _check_version(version)
    text = _read_config_text(repository, f"{_check_slot(slot)}/{version}")
    if text is None:
        text = _read_config_text(repository, slot)
    if text is None:
        raise BadInput(
            f"{repository} has no {slot}/{CONFIG_FILE}: write the version (deploy) before "
            "loading it"
        )
    config = parse_pbtxt(text)
    config["name"] = slot
    return _pinned(config, version)


def pinned(repository: str, slot: str) -> str | None:
    """The version the slot's config pins (what a restarted server loads); None without one."""
    text = _read_config_text(repository, _check_slot(slot))
    if text is None:
        return None
    versions = parse_pbtxt(text).get("version_policy", {}).get("specific", {}).get("versions")
    return str(versions[0]) if isinstance(versions, list) and len(versions) == 1 else None


def pin(repository: str, slot: str, version: str | int) -> None:
    """Make ``version`` the slot's desired state: rewrite ``<slot>/config.pbtxt`` atomically
    (locally a temporary file renamed over it; on S3 one object put) with the version's
    config pinned to it. Call it once every replica serves the version."""
    config = version_config(repository, slot, version)
    _put_config(repository, slot, render_pbtxt(config).encode())


def _put_config(repository: str, slot: str, config: bytes) -> None:
    if repository.startswith("s3://"):
        bucket, prefix = s3.split(repository, prefix=True)
        base = f"{prefix}/{slot}" if prefix else slot
        s3.client().put_object(Bucket=bucket, Key=f"{base}/{CONFIG_FILE}", Body=config)
        return
    model_dir = Path(repository) / slot
    model_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.", dir=model_dir)
    with os.fdopen(fd, "wb") as handle:
        handle.write(config)
    os.chmod(tmp, 0o644)
    os.replace(tmp, model_dir / CONFIG_FILE)


def _write_local(root: Path, slot: str, version: str, files: dict) -> str:
    model_dir = root / slot
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / version
    # a dot folder is not a version (Triton takes only numeric folder names)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        staging.chmod(0o755)
        if target.exists():  # rewriting a version (a retried step): swap, then drop the old
            old = Path(tempfile.mkdtemp(prefix=f".{version}.old.", dir=model_dir))
            target.rename(old / "v")
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def _write_s3(uri: str, slot: str, version: str, files: dict) -> str:
    bucket, prefix = s3.split(uri, prefix=True)
    base = f"{prefix}/{slot}" if prefix else slot
    client = s3.client()
    for name, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{base}/{version}/{name}", Body=data)
    return f"s3://{bucket}/{base}/{version}"


def _read_config_text(repository: str, slot: str) -> str | None:
    """The slot's config.pbtxt in a repository, or None when it has none."""
    if repository.startswith("s3://"):
        bucket, prefix = s3.split(repository, prefix=True)
        key = f"{prefix}/{slot}/{CONFIG_FILE}" if prefix else f"{slot}/{CONFIG_FILE}"
        client = s3.client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        except client.exceptions.NoSuchKey:
            return None
    path = Path(repository) / slot / CONFIG_FILE
    return path.read_text() if path.is_file() else None


# --------------------------------------------------------------- protobuf text format


_ENUM_KEYS = {"data_type", "kind", "format", "priority"}
# Fields of ModelConfig that are repeated or maps: the JSON form needs lists / objects
# even when the text form wrote them once.
_REPEATED = {
    "input",
    "output",
    "dims",
    "shape",
    "versions",
    "instance_group",
    "gpus",
    "secondary_devices",
    "profile",
    "preferred_batch_size",
    "model_warmup",
    "batch_input",
    "batch_output",
    "source_input",
    "step",
    "control_input",
    "control",
    "state",
    "initial_state",
    "int32_false_true",
    "fp32_false_true",
    "bool_false_true",
}
_MAPS = {"parameters", "cc_model_filenames", "metric_tags", "input_map", "output_map"}
_TOKEN = re.compile(
    r"\s+|#[^\n]*|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[{}\[\]:,;<>]|[^\s{}\[\]:,;<>\"'#]+"
)


def _scalar_text(key: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if key in _ENUM_KEYS:
        return str(value)
    return json.dumps(str(value))


def render_pbtxt(message: dict, indent: int = 0) -> str:
    """A ModelConfig in its JSON form (as ``model_config``) as protobuf text (config.pbtxt)."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if key in _MAPS:
            for map_key, map_value in value.items():
                inner = render_pbtxt({"key": map_key, "value": map_value}, indent + 1)
                lines.append(f"{pad}{key} {{\n{inner}{pad}}}\n")
        elif isinstance(value, list) and all(not isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar_text(key, v) for v in value)} ]\n")
        elif isinstance(value, list):
            items = ",\n".join(f"{pad}  {{\n{render_pbtxt(v, indent + 2)}{pad}  }}" for v in value)
            lines.append(f"{pad}{key} [\n{items}\n{pad}]\n")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{render_pbtxt(value, indent + 1)}{pad}}}\n")
        else:
            lines.append(f"{pad}{key}: {_scalar_text(key, value)}\n")
    return "".join(lines)


def parse_pbtxt(text: str) -> dict:
    """A config.pbtxt as the JSON form of ModelConfig (what Triton's load API accepts)."""
    tokens = [t for t in _TOKEN.findall(text) if t.strip() and not t.startswith("#")]
    pos = 0

    def peek() -> str:
        return tokens[pos] if pos < len(tokens) else ""

    def take(expected: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens) or (expected is not None and tokens[pos] != expected):
            found = tokens[pos] if pos < len(tokens) else "the end"
            raise BadInput(f"cannot parse {CONFIG_FILE}: expected {expected!r}, found {found!r}")
        pos += 1
        return tokens[pos - 1]

    def scalar():
        token = take()
        if token[0] in "\"'":
            try:
                return json.loads(token) if token[0] == '"' else token[1:-1]
            except ValueError:
                return token[1:-1]
        if token in ("true", "True"):
            return True
        if token in ("false", "False"):
            return False
        for kind in (int, float):
            try:
                return kind(token)
            except ValueError:
                pass
        return token  # an enum value

    def value():
        if peek() in ("{", "<"):
            return message("}" if take() == "{" else ">")
        return scalar()

    def message(end: str) -> dict:
        fields: dict = {}
        while peek() != end:
            if not peek():
                raise BadInput(f"cannot parse {CONFIG_FILE}: unbalanced braces")
            name = take()
            if peek() == ":":
                take()
            if peek() == "[":
                take()
                items = []
                while peek() != "]":
                    items.append(value())
                    if peek() == ",":
                        take()
                take("]")
                fields.setdefault(name, []).extend(items)
            else:
                item = value()
                if name in fields:
                    previous = fields[name]
                    fields[name] = (previous if isinstance(previous, list) else [previous]) + [item]
                else:
                    fields[name] = item
            if peek() in (",", ";"):
                take()
        if end:
            take(end)
        return _normalize(fields)

    return message("")


def _normalize(fields: dict) -> dict:
    for name, item in list(fields.items()):
        if name in _MAPS:
            entries = item if isinstance(item, list) else [item]
            fields[name] = {e["key"]: e.get("value") for e in entries if isinstance(e, dict)}
        elif name in _REPEATED and not isinstance(item, list):
            fields[name] = [item]
    return fields


# --------------------------------------------------------------------------- the client


class Triton:
    """One Triton server, driven with explicit model control over HTTP.

    Safe to use from several threads (each thread gets its own HTTP connection)."""

    def __init__(self, url: str | None = None, grpc_address: str | None = None):
        self.url = settings.server_url(url, "MLCP_TRITON_URL", "Triton", "--triton-url")
        scheme, _, rest = self.url.partition("://")
        self._address = rest
        self._ssl = scheme == "https"
        self._local = threading.local()
        # Loads and unloads go over gRPC when its address is known: Triton's HTTP handler
        # of a load blocks its HTTP worker for the whole load, and the inference requests
        # that worker holds (often all of them) wait as long (seen here: every client thread
        # stalled 1.7-2.8 s per switch of a python-backend slot, with 0 failures).
        # ``grpc_address`` "": loads over HTTP; None: $MLCP_TRITON_GRPC_URL.
        if grpc_address is None:
            grpc_address = MLCP_TRITON_GRPC_URL.raw
        grpc_url = grpc_address
        self.grpc_address = grpc_url.partition("://")[2] or grpc_url or None

    def __repr__(self) -> str:
        return f"Triton({self.url!r})"

    # -- plumbing

    def _client(self, network_timeout: float | None = None):
        import tritonclient.http as httpclient

        if network_timeout is not None:  # a one-off client for a long call (load)
            return httpclient.InferenceServerClient(
                self._address,
                connection_timeout=LIVE_TIMEOUT,
                network_timeout=network_timeout,
                ssl=self._ssl,
            )
        client = getattr(self._local, "client", None)
        if client is None:
            client = httpclient.InferenceServerClient(
                self._address, connection_timeout=LIVE_TIMEOUT, network_timeout=120.0, ssl=self._ssl
            )
            self._local.client = client
        return client

    def _control_client(self, timeout: float):
        """A one-off client for a load: gRPC when ``$MLCP_TRITON_GRPC_URL`` names Triton's
        gRPC endpoint (loads then leave the HTTP workers serving), else HTTP."""
        if not self.grpc_address:
            return self._client(network_timeout=timeout)
        import tritonclient.grpc as grpcclient

        return _Deadline(
            grpcclient.InferenceServerClient(self.grpc_address, ssl=self._ssl), timeout
        )

    def _refused(self, what: str, message: str) -> BadInput | None:
        """The error for a model-control call the server refused for want of the key."""
        if "is restricted" not in message:
            return None
        from ..base import secrets

        if not control_key():
            why = f"{secrets.source(CONTROL_KEY_ENV)} is not set"
        else:
            why = f"{CONTROL_KEY_ENV} does not hold the key this server was started with"
        return BadInput(
            f"Triton at {self.url} refused {what}: its model-control API needs a key and {why} "
            "(the local stack writes it to .mlcp/env; in the cluster it comes from the "
            "credentials Secret)"
        )

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def _unreachable(self, exc: BaseException) -> MlcpError:
        self._drop_client()
        return MlcpError(f"Triton is not reachable at {self.url}: {exc or type(exc).__name__}")

    def _call(self, what: str, fn, *args, **kwargs):
        """Run a tritonclient call; map its failures onto the mlcp errors."""
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            message = _message(exc)
            raise self._refused(what, message) or MlcpError(
                f"Triton at {self.url}: {what}: {message}"
            ) from None
        except (OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from None

    # -- the API

    def require_live(self) -> None:
        """Fail fast (a few seconds) when the server does not answer its liveness probe."""
        # no proxy, like tritonclient: an HTTP(S)_PROXY meant for the internet must not
        # route the probe of a server next door
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.url}/v2/health/live", timeout=LIVE_TIMEOUT) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise MlcpError(f"Triton is not reachable at {self.url}: {reason}") from None
        if status != 200:
            raise MlcpError(f"Triton at {self.url} is not live (HTTP {status})")

    def served_versions(self, slot: str) -> list[str]:
        """The versions of the slot that are ready to serve, oldest first ([] if none)."""
        _check_slot(slot)
        index = self._call(
            "the repository index",
            self._client().get_model_repository_index,
            headers=_control_headers(grpc=False),
        )
        versions = {
            str(entry["version"])
            for entry in index
            if entry.get("name") == slot and entry.get("state") == "READY" and entry.get("version")
        }
        return sorted(versions, key=int)

    def _config_for(self, slot: str, version: str) -> dict:
        """The whole config to load ``version`` with: Triton's load API *replaces*
        config.pbtxt by the config it is given (no merge), so pinning one version means
        sending all of it. It is read where Triton reads it: the repository this process
        last wrote the slot to, else ``$MLCP_TRITON_REPOSITORY``; without either, the config
        the slot is loaded with."""
        for repository in (_written.get(slot), MLCP_TRITON_REPOSITORY.get()):
            if repository:
                return version_config(repository, slot, version)
        if self.served_versions(slot):
            config = self._call("model config", self._client().get_model_config, slot)
            return _pinned({**config, "name": slot}, version)
        raise BadInput(
            f"cannot load {slot}: MLCP_TRITON_REPOSITORY is not set, so its config is unknown"
        )

    def load(self, slot: str, version: str | int, timeout: float = 120) -> None:
        """Make the slot serve exactly ``version``, even when a higher one exists (rollback).

        The load carries the slot's config with ``version_policy { specific { versions: [v] } }``.
        Triton loads the new version while the old one keeps serving, switches, then unloads
        the old one: requests never see the slot unavailable. Returns once ``version`` is the
        only ready version; a failed load raises MlcpError with Triton's message, and the slot
        keeps serving what it served before."""
        from tritonclient.utils import InferenceServerException

        _check_slot(slot)
        version = _check_version(version)
        self.require_live()
        config = self._config_for(slot, version)
        deadline = time.monotonic() + timeout
        client = self._control_client(timeout)
        try:
            client.load_model(slot, config=json.dumps(config), headers=_control_headers(False))
        except InferenceServerException as exc:
            what = f"loading {slot} version {version}"
            raise self._refused(what, _message(exc)) or MlcpError(
                f"Triton at {self.url}: {what}: {_message(exc)}"
            ) from None
        except TimeoutError:
            raise MlcpError(
                f"Triton at {self.url}: loading {slot} version {version} took more than "
                f"{timeout:g} s (the server may still finish it)"
            ) from None
        except OSError as exc:
            raise self._unreachable(exc) from None
        finally:
            client.close()
        while True:
            served = self.served_versions(slot)
            if served == [version]:
                return
            if time.monotonic() > deadline:
                raise MlcpError(
                    f"Triton at {self.url}: {slot} serves {served or 'nothing'} "
                    f"{timeout:g} s after loading version {version}"
                )
            time.sleep(0.1)

    def unload(self, slot: str, timeout: float = 60) -> None:
        """Stop serving the slot (a slot that is not loaded is left as it is)."""
        _check_slot(slot)
        self._call(
            f"unloading {slot}",
            self._client().unload_model,
            slot,
            headers=_control_headers(grpc=False),
        )
        deadline = time.monotonic() + timeout
        while self.served_versions(slot):
            if time.monotonic() > deadline:
                raise MlcpError(f"Triton at {self.url}: {slot} still serves after {timeout:g} s")
            time.sleep(0.1)

    def infer(self, slot: str, batch) -> tuple[np.ndarray, str]:
        """Logits ``[N, K]`` for a float32 batch ``[N, C, S, S]``, and the version that
        answered. A batch of the wrong shape or size raises BadInput naming the one the slot
        expects."""
        import numpy as np
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        _check_slot(slot)
        x = np.ascontiguousarray(batch, dtype=np.float32)
        inputs = [httpclient.InferInput(INPUT_NAME, list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x)
        outputs = [httpclient.InferRequestedOutput(OUTPUT_NAME)]
        try:
            result = self._client().infer(slot, inputs, outputs=outputs)
        except InferenceServerException as exc:
            raise self._infer_error(slot, x, exc) from None
        except (OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from None
        return result.as_numpy(OUTPUT_NAME), str(result.get_response()["model_version"])

    def _infer_error(self, slot: str, x, exc) -> MlcpError:
        message = _message(exc)
        lowered = message.lower()
        if "unknown model" in lowered or "no available versions" in lowered:
            return BadInput(f"Triton at {self.url} does not serve {slot}: {message}")
        if "not ready" in lowered or "not at ready" in lowered:
            return BadInput(f"Triton at {self.url} does not serve {slot}: {message}")
        if str(exc.status()) == "400":
            expected = self._expected_input(slot)
            return BadInput(
                f"{slot} expects {INPUT_NAME!r} as {expected}, got {x.dtype} {list(x.shape)}: "
                f"{message}"
            )
        return MlcpError(f"Triton at {self.url}: inference on {slot} failed: {message}")

    def _expected_input(self, slot: str) -> str:
        try:
            config = self._client().get_model_config(slot)
        except Exception:
            return "the shape in its config"
        spec = next((i for i in config.get("input", []) if i.get("name") == INPUT_NAME), None)
        if not spec:
            return "the shape in its config"
        dims = ",".join(str(d) for d in spec.get("dims", []))
        kind = str(spec.get("data_type", "")).removeprefix("TYPE_")
        limit = config.get("max_batch_size", 0)
        return f"{kind} [N,{dims}] with 1 <= N <= {limit}" if limit else f"{kind} [{dims}]"


# ----------------------------------------------------------------------------- replicas


def listed_addresses() -> list[str]:
    """``host:port`` (HTTP) of each entry of ``$MLCP_TRITON_REPLICAS`` as written, names
    unresolved (what a router resolves itself); empty when the variable is unset."""
    listed = MLCP_TRITON_REPLICAS.raw
    return [f"{host}:{port}" for _, host, port, _ in _entries(listed)] if listed else []


def _entries(text: str) -> list[tuple[str, str, str, str]]:
    """``$MLCP_TRITON_REPLICAS`` parsed: (scheme, host, http port, grpc port or "")."""
    found = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        scheme, sep, rest = entry.partition("://")
        if not sep:
            scheme, rest = "http", entry
        address, _, grpc_port = rest.partition("/")
        host, _, port = address.rpartition(":")
        if scheme not in ("http", "https") or not host or not port.isdigit():
            raise BadInput(f"{REPLICAS_ENV}: {entry!r} is not [http://]HOST:HTTP_PORT[/GRPC_PORT]")
        if grpc_port and not grpc_port.isdigit():
            raise BadInput(f"{REPLICAS_ENV}: {entry!r} has a gRPC port that is not a number")
        found.append((scheme, host.strip("[]"), port, grpc_port))
    if not found:
        raise BadInput(f"{REPLICAS_ENV} is set but names no replica")
    return found


def _addresses(host: str, port: str) -> list[str]:
    """Every address ``host`` resolves to (a headless Service: one per ready pod)."""
    import ipaddress
    import socket

    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


class Fleet:
    """Every replica of the Triton server that the steps must load: what
    ``$MLCP_TRITON_REPLICAS`` names, else the one server at ``url`` / ``$MLCP_TRITON_URL``.

    ``members`` holds (replica URL, Triton client or None, why it is None)."""

    def __init__(self, url: str | None = None):
        listed = MLCP_TRITON_REPLICAS.raw
        self.members: list[tuple[str, Triton | None, str | None]] = []
        if not listed:
            server = Triton(url)
            self.members.append((server.url, server, None))
            return
        for scheme, host, port, grpc_port in _entries(listed):
            try:
                addresses = _addresses(host, port)
            except OSError as exc:
                self.members.append((f"{scheme}://{host}:{port}", None, f"unresolved: {exc}"))
                continue
            for address in addresses:
                shown = f"[{address}]" if ":" in address else address
                grpc = f"{shown}:{grpc_port}" if grpc_port else ""
                server = Triton(f"{scheme}://{shown}:{port}", grpc_address=grpc)
                self.members.append((server.url, server, None))

    @property
    def urls(self) -> list[str]:
        return [url for url, _, _ in self.members]

    def _each(self, fn) -> list[tuple[str, object, BaseException | None]]:
        """``fn(server)`` on every replica at once: (url, result, error) per replica."""
        from concurrent.futures import ThreadPoolExecutor

        def one(member):
            url, server, why = member
            if server is None:
                return url, None, MlcpError(f"Triton replica {url} is {why}")
            try:
                return url, fn(server), None
            except Exception as exc:  # reported per replica below
                return url, None, exc

        with ThreadPoolExecutor(max_workers=min(8, len(self.members))) as pool:
            return list(pool.map(one, self.members))

    def served(self, slot: str) -> list[Served]:
        """What each replica serves on the slot: the highest ready version (during a switch
        both are ready and Triton answers with the higher), or the error asking it."""
        found = []
        for url, versions, error in self._each(lambda server: server.served_versions(slot)):
            if error is not None:
                found.append(Served(url, None, str(error)))
            else:
                found.append(Served(url, versions[-1] if versions else None))
        return found

    def load(self, slot: str, version: str | int, timeout: float = 120) -> None:
        """Make every replica serve exactly ``version`` on the slot (concurrently). Returns
        only when all of them do; else raises naming each replica that did not (a replica
        refused for want of the key raises BadInput: a setting is missing)."""
        version = _check_version(version)
        results = self._each(lambda server: server.load(slot, version, timeout))
        failed = [(url, error) for url, _, error in results if error is not None]
        if not failed:
            return
        named = "; ".join(f"{url}: {error}" for url, error in failed)
        message = (
            f"{len(failed)} of {len(results)} Triton replica(s) did not load {slot} "
            f"v{version}: {named}"
        )
        if all(isinstance(error, BadInput) for _, error in failed):
            raise BadInput(message)
        raise MlcpError(message)


class _Deadline:
    """A gRPC client whose ``load_model`` carries a deadline (``client_timeout``)."""

    def __init__(self, client, timeout: float):
        self._client, self._timeout = client, timeout

    def load_model(self, name: str, config: str, headers=None) -> None:
        # ``headers`` are the HTTP form of the key: gRPC wants its own (_control_headers)
        self._client.load_model(
            name, config=config, headers=_control_headers(grpc=True), client_timeout=self._timeout
        )

    def close(self) -> None:
        self._client.close()


def _message(exc) -> str:
    """Triton's error message, without the request-id prefix and the long NOTE it appends."""
    message = (exc.message() or str(exc)).strip()
    message = re.sub(r"^\[request id: [^\]]*\]\s*", "", message)
    return message.split(" NOTE: ")[0].strip()
