"""Serving environments built beside the project's own: tritonserver's and vLLM's.

Each runs from its own virtual environment under ``.mlcp/envs/`` (as it would from its own
image), built once by ``steps.local.stack`` (Triton) or ``steps.serving.vllm`` (vLLM). What both
builds share lives here: the Python to build with, one logged build step with progress, and
the process environment of a program run from such a venv. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..base.environment import MLCP_ENV_CACHE
from ..base.errors import MlcpError

# A folder shared by stack folders: each serving environment is built there once per set of
# requirements, and a stack folder's ``envs/<name>`` links to it. Unset, each stack folder
# builds its own (what `mlcp stack up` in a checkout does: `.mlcp/envs/`). The test session
# sets it, so its own stack and every stack a test starts in a folder of its own share one
# build of each environment instead of paying for one per folder.
CACHE_VAR = MLCP_ENV_CACHE.name


def shared_dir(name: str, requirements: tuple[str, ...]) -> Path | None:
    """``$MLCP_ENV_CACHE/<name>-<digest of the requirements>``, or None when unset: a change
    of requirements is another folder, so an environment there is never half-upgraded."""
    root = MLCP_ENV_CACHE.get()
    if not root:
        return None
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    return Path(root).resolve() / f"{name}-{digest}"


@contextlib.contextmanager
def build_lock(folder: Path, name: str) -> Iterator[None]:
    """One build of environment ``name`` at a time in ``folder`` (processes of one machine)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{name}-build.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def link(venv: Path, target: Path) -> None:
    """Make ``venv`` a link to ``target`` (replacing what is there: a folder of its own, an
    older link), so the stack folder's layout is the same whether the build is shared."""
    if venv.is_symlink() and venv.resolve() == target.resolve():
        return
    if venv.is_symlink() or venv.is_file():
        venv.unlink()
    elif venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    venv.symlink_to(target)


def python_for(version: str, what: str) -> str:
    """``python<version>`` from PATH, else this interpreter when it is that version."""
    found = shutil.which(f"python{version}")
    if found:
        return found
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    raise MlcpError(f"building the {what} environment needs python{version}, none is on PATH")


def run_step(
    argv: list[str],
    log_path: Path,
    what: str,
    timeout: float,
    say: Callable[[str], None],
    every: float = 15.0,
) -> None:
    """Run one build step with its output in the log and a progress line every ``every`` s;
    MlcpError with the log's last lines when it fails or outlasts ``timeout``."""
    started = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    announced = 0.0
    while process.poll() is None:
        waited = time.monotonic() - started
        if waited > timeout:
            process.kill()
            process.wait()
            raise MlcpError(f"{what} did not finish in {timeout:.0f} s; see {log_path}")
        if waited - announced >= every:
            announced = waited
            say(f"{what} ... {waited:.0f} s")
        time.sleep(0.2)
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise MlcpError(
            f"{what} failed (exit {process.returncode}); last lines of {log_path}:\n{tail}"
        )


def venv_process_env(venv: Path) -> dict[str, str]:
    """This process's environment for a program of ``venv``: that venv first on PATH, and
    none of the variables that would point its Python at ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    }
    env["PATH"] = f"{Path(venv) / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["VIRTUAL_ENV"] = str(venv)
    return env
