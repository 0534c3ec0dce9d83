"""Triton Inference Server: the model repository layout and a client for explicit model control.

A *slot* is a Triton model name (``<model>-staged``, ``<model>-live``); its versions are the
MLflow version numbers. ``write_entry`` puts a version into the repository (a local folder
or an ``s3://`` prefix), ``Triton.load`` makes the slot serve exactly that version (also an
older one: rollback), ``Triton.infer`` answers which version computed the logits.

The same layout serves two backends: ``python`` (a ``model.py`` running the ONNX file with
onnxruntime; the only backend the local stack's tritonserver has) and ``onnxruntime`` (the
official Triton image). tritonclient and numpy are imported inside functions only.
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

from .. import s3, settings
from ..errors import BadInput, MlcpError

if TYPE_CHECKING:
    import numpy as np

BACKENDS = ("python", "onnxruntime")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

CONFIG_FILE = "config.pbtxt"
ONNX_FILE = "model.onnx"
PYTHON_FILE = "model.py"
LIVE_TIMEOUT = 3.0


def url_option():
    """The ``--triton-url`` option every stage that talks to Triton declares."""
    from ..declare import option

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
    # Triton's default; Triton.load overrides it with the one version it is asked for.
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
    """Write ``<repository>/<slot>/config.pbtxt`` and ``<repository>/<slot>/<version>/``
    (``model.onnx``, plus ``model.py`` for the python backend) to a local folder or an
    ``s3://bucket/prefix`` (the client of :mod:`steps.s3`). Returns the version's
    folder (a path, or an ``s3://`` URI).

    No half-written version is ever exposed. Locally the version is written to a temporary
    folder beside it and renamed into place (one atomic rename; a version written before is
    replaced), and the config is replaced atomically after it. On S3, where a prefix cannot be
    renamed, the version's files are uploaded first and ``config.pbtxt`` only after them. That
    is safe because the server runs with explicit model control: Triton reads a slot's folder
    only when ``Triton.load`` asks it to, never by polling, so nothing reads the new version
    before this function has returned and the caller loads it; and ``Triton.load`` pins the
    one version it loads, so a load running meanwhile reads no other version folder. A loaded
    version is not read again either: it keeps serving what it loaded.
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
    files = {ONNX_FILE: bytes(onnx_bytes)}
    if backend == "python":
        files[PYTHON_FILE] = (Path(__file__).with_name("triton_model.py")).read_bytes()
    config_text = render_pbtxt(config).encode()
    if repository.startswith("s3://"):
        where = _write_s3(repository, slot, version, files, config_text)
    else:
        where = _write_local(Path(repository), slot, version, files, config_text)
    _written[slot] = repository
    return where


def _write_local(root: Path, slot: str, version: str, files: dict, config: bytes) -> str:
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
    fd, tmp = tempfile.mkstemp(prefix=".config.", dir=model_dir)
    with os.fdopen(fd, "wb") as handle:
        handle.write(config)
    os.chmod(tmp, 0o644)
    os.replace(tmp, model_dir / CONFIG_FILE)
    return str(target)


def _write_s3(uri: str, slot: str, version: str, files: dict, config: bytes) -> str:
    bucket, prefix = s3.split(uri, prefix=True)
    base = f"{prefix}/{slot}" if prefix else slot
    client = s3.client()
    for name, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{base}/{version}/{name}", Body=data)
    client.put_object(Bucket=bucket, Key=f"{base}/{CONFIG_FILE}", Body=config)
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

    def __init__(self, url: str | None = None):
        self.url = settings.server_url(url, "MLCP_TRITON_URL", "Triton", "--triton-url")
        scheme, _, rest = self.url.partition("://")
        self._address = rest
        self._ssl = scheme == "https"
        self._local = threading.local()
        # Loads and unloads go over gRPC when its address is known: Triton's HTTP handler
        # of a load blocks its HTTP worker for the whole load, and the inference requests
        # that worker holds (often all of them) wait as long (seen here: every client thread
        # stalled 1.7-2.8 s per switch of a python-backend slot, with 0 failures).
        grpc_url = os.environ.get("MLCP_TRITON_GRPC_URL", "")
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
            raise MlcpError(f"Triton at {self.url}: {what}: {_message(exc)}") from None
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
        index = self._call("repository index", self._client().get_model_repository_index)
        versions = {
            str(entry["version"])
            for entry in index
            if entry.get("name") == slot and entry.get("state") == "READY" and entry.get("version")
        }
        return sorted(versions, key=int)

    def _slot_config(self, slot: str) -> dict:
        """The slot's whole config: Triton's load API *replaces* config.pbtxt by the config
        it is given (no merge), so pinning one version means sending all of it. It is read
        where Triton reads it: the repository this process last wrote the slot to, else
        ``$MLCP_TRITON_REPOSITORY``; without either, the config the slot is loaded with."""
        for repository in (_written.get(slot), os.environ.get("MLCP_TRITON_REPOSITORY")):
            if repository:
                text = _read_config_text(repository, slot)
                if text is None:
                    raise BadInput(
                        f"{repository} has no {slot}/{CONFIG_FILE}: write the version "
                        "(deploy) before loading it"
                    )
                return parse_pbtxt(text)
        if self.served_versions(slot):
            return self._call("model config", self._client().get_model_config, slot)
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
        config = self._slot_config(slot)
        config["name"] = slot
        config["version_policy"] = {"specific": {"versions": [int(version)]}}
        deadline = time.monotonic() + timeout
        client = self._control_client(timeout)
        try:
            client.load_model(slot, config=json.dumps(config))
        except InferenceServerException as exc:
            raise MlcpError(
                f"Triton at {self.url}: loading {slot} version {version}: {_message(exc)}"
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
        self._call(f"unloading {slot}", self._client().unload_model, slot)
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


class _Deadline:
    """A gRPC client whose ``load_model`` carries a deadline (``client_timeout``)."""

    def __init__(self, client, timeout: float):
        self._client, self._timeout = client, timeout

    def load_model(self, name: str, config: str) -> None:
        self._client.load_model(name, config=config, client_timeout=self._timeout)

    def close(self) -> None:
        self._client.close()


def _message(exc) -> str:
    """Triton's error message, without the request-id prefix and the long NOTE it appends."""
    message = (exc.message() or str(exc)).strip()
    message = re.sub(r"^\[request id: [^\]]*\]\s*", "", message)
    return message.split(" NOTE: ")[0].strip()
