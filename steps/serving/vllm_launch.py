"""Start vLLM's OpenAI-compatible server and give its adapter slots back what they should serve.

vLLM forgets every adapter loaded at run time when it restarts. The steps therefore record
each slot's desired state in a manifest on the adapter volume (``<adapters>/manifest.json``:
slot -> adapter folder as the server sees it), written after a load succeeded on every
replica. This launcher starts the server (``python -m vllm.entrypoints.openai.api_server``
with the arguments after ``--``), waits for ``/health``, loads every slot of the manifest
through the runtime LoRA endpoint, and only then writes its ready file, which the stack and
the chart's readinessProbe (``--probe``) wait for. A slot that cannot be loaded (its folder
was removed) is logged and left out: one stale entry must not keep the server from serving
the others; ``mlcp serving check`` reports the slot.

Standard library only, one file: the vLLM image and the local stack's ``vllm`` environment
run it as a script, without the ``steps`` package. The steps import it for the manifest's
format (:func:`read_manifest`, :func:`update_manifest`), so the format is declared here once.

    python vllm_launch.py [--manifest PATH] [--ready-file PATH] -- VLLM-ARGS...
    python vllm_launch.py --probe [--ready-file PATH]

The launcher sends vLLM's API key (the key vLLM itself guards ``/v1`` with) on its loads:
``$VLLM_API_KEY``, else the file ``$VLLM_API_KEY_FILE`` names (the chart mounts it from a
Secret, so that no Secret is in the pod's environment). vLLM reads its key only from its
environment or its command line (which a process listing shows), so the launcher hands a
key read from the file to the server's environment alone.
vLLM's key guards only paths under ``/v1`` (and a few other prefixes). With runtime LoRA
updating on, vLLM 0.32 also answers SageMaker's adapter routes, ``POST /adapters`` and
``DELETE /adapters/{name}``, which that key does not guard (seen: an adapter registered
with no key). The launcher therefore adds :class:`RefuseUnguardedAdapterRoutes` to the
server (vLLM's ``--middleware``), which answers 403 there; mlcp uses
``/v1/load_lora_adapter`` only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
LOCK_NAME = ".manifest.lock"
# Where the image looks by default (the chart's adapter volume and an emptyDir at /tmp).
DEFAULT_MANIFEST = os.path.join("/adapters", MANIFEST_NAME)
DEFAULT_READY_FILE = "/tmp/mlcp-vllm-ready"
MANIFEST_ENV = "MLCP_VLLM_MANIFEST"
READY_FILE_ENV = "MLCP_VLLM_READY_FILE"
API_KEY_ENV = "VLLM_API_KEY"  # vLLM's own variable: --api-key falls back to it
API_KEY_FILE_ENV = API_KEY_ENV + "_FILE"  # the file the key is read from when that is unset
MODULE = "mlcp_vllm_launch"  # the name the server imports this file under (for its middleware)
UNGUARDED_ADAPTER_ROUTES = ("/adapters",)
LOAD_ATTEMPTS = 3
SETTLE_ROUNDS = 5  # reload while the manifest changes under us, at most this many times


def log(message: str) -> None:
    print(f"[vllm-launch] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the manifest


def read_manifest(path: str) -> dict[str, dict]:
    """The slots a manifest records: slot -> {"path": folder, ...}; {} when there is none.
    A manifest that cannot be read is reported and treated as empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log(f"cannot read the manifest {path}: {exc}")
        return {}
    slots = data.get("slots") if isinstance(data, dict) else None
    if not isinstance(slots, dict):
        log(f"{path} holds no slots")
        return {}
    return {
        str(slot): entry
        for slot, entry in slots.items()
        if isinstance(entry, dict) and isinstance(entry.get("path"), str)
    }


@contextlib.contextmanager
def _manifest_lock(folder: str):
    """One writer of a folder's manifest at a time (an advisory lock beside it)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_NAME), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_manifest(folder: str, slots: dict[str, dict]) -> str:
    """Record ``slots`` (slot -> {"path": folder as the server sees it, ...}) in
    ``<folder>/manifest.json``, keeping the other slots: read, change and replace under a
    lock, the new content written to a temporary file first and renamed over the old one, so
    a server starting meanwhile reads either the old manifest or the new one, whole."""
    path = os.path.join(folder, MANIFEST_NAME)
    with _manifest_lock(folder):
        current = read_manifest(path)
        current.update(slots)
        content = {"version": MANIFEST_VERSION, "slots": dict(sorted(current.items()))}
        fd, temporary = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(content, handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    return path


# ------------------------------------------------------------------------------- the server


class RefuseUnguardedAdapterRoutes:
    """ASGI middleware: 403 for the adapter routes vLLM's API key leaves open (plain ASGI, so
    nothing beyond the standard library is imported here)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") in ("http", "websocket"):
            path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
            if any(path == r or path.startswith(r + "/") for r in UNGUARDED_ADAPTER_ROUTES):
                body = json.dumps(
                    {"error": "closed by mlcp: load adapters through /v1/load_lora_adapter"}
                ).encode()
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 403, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _importable_self() -> str:
    """A fresh folder holding only a link to this file as ``MODULE``, for the server's
    PYTHONPATH: its own folder may hold modules that would shadow others (the steps'
    ``vllm.py`` beside this file would shadow vLLM itself)."""
    folder = tempfile.mkdtemp(prefix="mlcp-vllm-launch-")
    os.symlink(os.path.abspath(__file__), os.path.join(folder, MODULE + ".py"))
    return folder


def _option(argv: list[str], name: str, default: str) -> str:
    """The value of ``--name`` in vLLM's arguments (``--name V`` or ``--name=V``)."""
    value = default
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def base_url(vllm_args: list[str]) -> str:
    host = _option(vllm_args, "--host", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{_option(vllm_args, '--port', '8000')}"


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(url: str) -> bool:
    try:
        with _OPENER.open(f"{url}/health", timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def api_key() -> str | None:
    """vLLM's API key: ``$VLLM_API_KEY``, else the content of the file ``$VLLM_API_KEY_FILE``
    names (None when neither gives one; a file that is not there gives none)."""
    key = os.environ.get(API_KEY_ENV)
    if key:
        return key
    path = os.environ.get(API_KEY_FILE_ENV, "").strip()
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None


def _load(url: str, slot: str, folder: str) -> None:
    body = json.dumps({"lora_name": slot, "lora_path": folder, "load_inplace": True}).encode()
    headers = {"Content-Type": "application/json"}
    key = api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        f"{url}/v1/load_lora_adapter", data=body, method="POST", headers=headers
    )
    with _OPENER.open(request, timeout=300) as response:
        response.read()


def _load_retrying(url: str, slot: str, folder: str) -> str | None:
    """Load one slot, trying again after a server error; None when loaded, else why not."""
    error = None
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        try:
            _load(url, slot, folder)
            return None
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')[:300]}"
            if exc.code < 500:
                return error  # refused (no such folder, no key): trying again changes nothing
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = str(exc)
        time.sleep(attempt)
    return error


def load_slots(url: str, manifest: str) -> tuple[dict[str, str], dict[str, str]]:
    """Load every slot of the manifest; again while the manifest changes meanwhile (a step
    that recorded a move while this server was starting). Returns (loaded, failed)."""
    loaded: dict[str, str] = {}
    failed: dict[str, str] = {}
    tried: dict[str, str] = {}
    for _ in range(SETTLE_ROUNDS):
        wanted = {slot: entry["path"] for slot, entry in read_manifest(manifest).items()}
        todo = {slot: path for slot, path in wanted.items() if tried.get(slot) != path}
        if not todo:
            break
        for slot, folder in sorted(todo.items()):
            tried[slot] = folder
            error = _load_retrying(url, slot, folder)
            if error is None:
                loaded[slot] = folder
                failed.pop(slot, None)
                log(f"loaded {slot} <- {folder}")
            else:
                failed[slot] = error
                loaded.pop(slot, None)
                log(f"could not load {slot} <- {folder}: {error}")
    return loaded, failed


def _write_ready(path: str, url: str, loaded: dict, failed: dict) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".mlcp-vllm-ready.", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"url": url, "loaded": loaded, "failed": failed}, handle, indent=2)
    os.replace(temporary, path)


def launch(manifest: str, ready_file: str, vllm_args: list[str]) -> int:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ready_file)  # a ready file from a previous run says nothing of this one
    url = base_url(vllm_args)
    guard = f"{MODULE}.{RefuseUnguardedAdapterRoutes.__name__}"
    command = [
        *(sys.executable, "-m", "vllm.entrypoints.openai.api_server"),
        *vllm_args,
        *("--middleware", guard),
    ]
    env = dict(os.environ)
    key = api_key()
    if key:  # vLLM reads it from its environment (the file's path stays the launcher's)
        env[API_KEY_ENV] = key
    env.pop(API_KEY_FILE_ENV, None)
    importable = _importable_self()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (importable, env.get("PYTHONPATH")) if p)
    log(f"starting {' '.join(command)}")
    child = subprocess.Popen(command, env=env)

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        while child.poll() is None and not _healthy(url):
            time.sleep(0.5)
        if child.poll() is None:
            started = time.monotonic()
            loaded, failed = load_slots(url, manifest)
            took = time.monotonic() - started
            log(f"{len(loaded)} slot(s) of {manifest} loaded in {took:.1f} s, {len(failed)} failed")
            if child.poll() is None:
                _write_ready(ready_file, url, loaded, failed)
                log(f"ready ({ready_file})")
        return child.wait()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ready_file)
        if child.poll() is None:
            child.terminate()
        shutil.rmtree(importable, ignore_errors=True)


def probe(ready_file: str) -> int:
    """0 when the launcher has loaded the manifest and the server answers /health."""
    try:
        with open(ready_file, encoding="utf-8") as handle:
            url = json.load(handle)["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return 1
    return 0 if _healthy(url) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, vllm_args = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    parser = argparse.ArgumentParser(prog="vllm_launch.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)
    parser.add_argument(
        "--ready-file", default=os.environ.get(READY_FILE_ENV) or DEFAULT_READY_FILE
    )
    parser.add_argument("--probe", action="store_true", help="exit 0 when ready, else 1")
    args = parser.parse_args(own)
    if args.probe:
        return probe(args.ready_file)
    return launch(args.manifest, args.ready_file, vllm_args)


if __name__ == "__main__":
    sys.exit(main())
