"""Provenance: what made a run, written as tags on every run the project creates.

The code (the git commit and the package version), what ran it (``mlcp cv train``), the image
it ran in, the versions of the libraries that matter, the CUDA version and the GPU, and the
seeds the run set. MLflow's own tag names where MLflow defines one (so its UI shows them),
``mlcp.*`` for the rest; every key is declared in :mod:`steps.spec.contract`.

Standard library only, and cheap: :func:`tags` reads versions with ``importlib.metadata``
and never imports torch or mlflow (``mlcp promote`` stays fast). The CUDA version and the
GPU are read only from a torch the process has already imported; otherwise they are
``not loaded``. :func:`tracking.context_tags` adds :func:`tags` to every run; a training
run also logs every installed distribution (:func:`log_environment`).
"""

from __future__ import annotations

import functools
import platform
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from .. import __version__
from ..base.environment import MLCP_GIT_COMMIT, MLCP_IMAGE
from ..spec.contract import (
    CUDA_TAG,
    ENV_LIBRARIES,
    ENV_TAG_PREFIX,
    GIT_COMMIT_TAG,
    GPU_TAG,
    IMAGE_TAG,
    LOCAL_IMAGE,
    NO_SEED,
    NOT_INSTALLED,
    NOT_LOADED,
    PACKAGE_VERSION_TAG,
    SEEDS_TAG,
    SOURCE_NAME_TAG,
    SOURCE_TYPE,
    SOURCE_TYPE_TAG,
    UNKNOWN,
)

# The step image bakes the commit in (images/steps.Dockerfile); the templates pass the image.
GIT_COMMIT_ENV = MLCP_GIT_COMMIT.name
IMAGE_ENV = MLCP_IMAGE.name
# Where a training run logs every installed distribution (name and version).
DISTRIBUTIONS_ARTIFACT = "environment/distributions.json"
# The checkout the code runs from: the folder that holds the ``steps`` package. An installed
# copy (site-packages) has no ``.git`` there, and none above it is looked at.
CODE_ROOT = Path(__file__).resolve().parents[2]
# A library whose wheel goes by more than one distribution name.
_DISTRIBUTION_NAMES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu")}
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
_WORD = re.compile(r"[a-z][a-z0-9-]*")
_SEEDS: dict[str, str] = {}


# ------------------------------------------------------------------ the code


def _git_dir(root: Path) -> Path | None:
    """``root/.git``: a folder, or a file ``gitdir: <path>`` (a worktree, a submodule)."""
    dot = root / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():
        text = dot.read_text().strip()
        if text.startswith("gitdir:"):
            path = Path(text[len("gitdir:") :].strip())
            return path if path.is_absolute() else (root / path).resolve()
    return None


def _read_ref(git: Path, common: Path, ref: str) -> str | None:
    """What ``ref`` (``refs/heads/main``) holds: a loose ref file, else ``packed-refs``."""
    for folder in (git, common):
        loose = folder / ref
        if loose.is_file():
            return loose.read_text().strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, name = line.strip().partition(" ")
            if name == ref and not sha.startswith(("#", "^")):
                return sha
    return None


def read_commit(root: Path) -> str | None:
    """The commit checked out at ``root`` (read from ``.git`` directly, no ``git`` process);
    None when ``root`` is no checkout or its HEAD names no commit yet."""
    try:
        git = _git_dir(root)
        if git is None:
            return None
        common = git
        if (git / "commondir").is_file():  # a linked worktree: the branches live there
            common = (git / (git / "commondir").read_text().strip()).resolve()
        head: str | None = (git / "HEAD").read_text().strip()
        for _ in range(10):  # a symbolic ref may name another (bounded: no loop forever)
            if head is None or not head.startswith("ref:"):
                break
            head = _read_ref(git, common, head[len("ref:") :].strip())
        return head.lower() if head and _SHA.fullmatch(head.lower()) else None
    except (OSError, UnicodeDecodeError):
        return None


@functools.cache
def _checkout_commit() -> str | None:
    return read_commit(CODE_ROOT)


def git_commit() -> str:
    """``$MLCP_GIT_COMMIT`` (the image bakes it in), else the checkout's, else ``unknown``."""
    return MLCP_GIT_COMMIT.raw or _checkout_commit() or UNKNOWN


def image() -> str:
    """The image the step runs in (``$MLCP_IMAGE``, the templates pass it), else ``local``."""
    return MLCP_IMAGE.raw or LOCAL_IMAGE


CLI_MODULE = "steps.cli"  # the module behind the `mlcp` script (pyproject.toml)


def source_name(argv: list[str] | None = None) -> str:
    """What ran, for people: ``mlcp cv train``, ``python -m steps.docs``, ``pytest``. The
    program and its leading command words (no flag, value, path or model reference).
    ``python -m steps.cli`` (how a chain runs its stages) is the same program as ``mlcp``,
    and says so: the command a person would type."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or not argv[0] or argv[0] == "-c":
        return "python"
    path = Path(argv[0])
    program = path.name
    if path.suffix == ".py":
        try:
            parts = list(path.resolve().relative_to(CODE_ROOT).with_suffix("").parts)
        except ValueError:
            parts = []
        if parts and parts[-1] == "__main__":
            parts.pop()
        if parts:
            module = ".".join(parts)
            program = "mlcp" if module == CLI_MODULE else "python -m " + module
    words = []
    for word in argv[1:4]:
        if not _WORD.fullmatch(word):
            break
        words.append(word)
    return " ".join([program, *words])


# ------------------------------------------------------------------ the environment


def _version(library: str) -> str:
    from importlib import metadata  # not at import time: `mlcp --help` does not need it

    if library == "python":
        return platform.python_version()
    for name in _DISTRIBUTION_NAMES.get(library, (library,)):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return NOT_INSTALLED


@functools.cache
def library_versions() -> dict[str, str]:
    """Python and the libraries of contract.ENV_LIBRARIES: version, or ``not installed``
    (from the installed metadata; nothing is imported)."""
    return {library: _version(library) for library in ENV_LIBRARIES}


def hardware() -> tuple[str, str]:
    """(CUDA version, GPU name) as a torch the process already imported sees them: ``cpu``
    for both without CUDA, ``not loaded`` for both when torch is not imported (this never
    imports it)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if torch is None or cuda is None:  # not imported, or still importing
        return NOT_LOADED, NOT_LOADED
    try:
        if not cuda.is_available():
            return "cpu", "cpu"
        version = getattr(torch.version, "cuda", None) or getattr(torch.version, "hip", None)
        count = cuda.device_count()
        name = cuda.get_device_name()
        return str(version or UNKNOWN), name if count <= 1 else f"{count} x {name}"
    except Exception:  # a broken driver must not stop a run from being recorded
        return UNKNOWN, UNKNOWN


def distributions() -> list[dict[str, str]]:
    """Every installed distribution, ``{"name", "version"}``, sorted by its normalised name;
    one per name (the first on ``sys.path``, the one an import finds)."""
    from importlib import metadata

    found: dict[str, dict[str, str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        found.setdefault(key, {"name": name, "version": str(dist.version)})
    return [found[key] for key in sorted(found)]


# ------------------------------------------------------------------ seeds


def note_seed(name: str, value: object) -> None:
    """Record that this process seeded ``name`` with ``value`` (call it where you seed)."""
    _SEEDS[str(name)] = str(value)


def seeds() -> str:
    """The seeds noted so far, ``name=value`` comma-separated by name, or ``none``."""
    return ",".join(f"{name}={value}" for name, value in sorted(_SEEDS.items())) or NO_SEED


# ------------------------------------------------------------------ the tags


def tags() -> dict[str, str]:
    """Every provenance tag (contract.PROVENANCE_TAGS) of a run this process opens now."""
    cuda, gpu = hardware()
    return {
        GIT_COMMIT_TAG: git_commit(),
        SOURCE_NAME_TAG: source_name(),
        SOURCE_TYPE_TAG: SOURCE_TYPE,
        PACKAGE_VERSION_TAG: __version__,
        IMAGE_TAG: image(),
        **{ENV_TAG_PREFIX + library: v for library, v in library_versions().items()},
        CUDA_TAG: cuda,
        GPU_TAG: gpu,
        SEEDS_TAG: seeds(),
    }


def log_environment() -> None:
    """In the active MLflow run (a training stage's): log every installed distribution as
    ``environment/distributions.json`` and bring the tags that change within a process up
    to date (the seeds noted, the CUDA version and GPU once torch is loaded)."""
    import mlflow

    if mlflow.active_run() is None:
        raise RuntimeError("log_environment: no active MLflow run")
    cuda, gpu = hardware()
    mlflow.set_tags({CUDA_TAG: cuda, GPU_TAG: gpu, SEEDS_TAG: seeds()})
    mlflow.log_dict(distributions(), DISTRIBUTIONS_ARTIFACT)


def of_run(run_tags: Mapping[str, str]) -> dict:
    """A run's provenance for people (``mlcp lineage``): code, image, environment, and the
    revisions of the models it loaded (steps/spec/pinning.py). A tag the run lacks (recorded
    before provenance was) is None."""
    from ..spec import pinning

    env = {library: run_tags.get(ENV_TAG_PREFIX + library) for library in ENV_LIBRARIES}
    return {
        "code": {
            "commit": run_tags.get(GIT_COMMIT_TAG),
            "package_version": run_tags.get(PACKAGE_VERSION_TAG),
            "source": run_tags.get(SOURCE_NAME_TAG),
        },
        "image": run_tags.get(IMAGE_TAG),
        "environment": {
            **env,
            "cuda": run_tags.get(CUDA_TAG),
            "gpu": run_tags.get(GPU_TAG),
            "seeds": run_tags.get(SEEDS_TAG),
        },
        "models": pinning.of_run(run_tags),
    }
