"""Prompts that are not data (the LLM judge's instructions) are versioned three ways:

- logged as an artifact of the run that used them (``prompts/<name>.txt``);
- the run is tagged with the prompt's sha256 (``mlcp.prompt.<name>.sha256``), and
  ``mlcp.prompts`` lists every ``name:sha256`` the run used, so runs can be found by hash;
- registered in MLflow's prompt registry; an unchanged text reuses its registered version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..base.errors import BadInput, MlcpError

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class PromptVersion:
    name: str
    sha256: str
    registry_version: int


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _register(name: str, text: str, digest: str) -> int:
    import mlflow.genai
    from mlflow.exceptions import MlflowException

    try:
        latest = mlflow.genai.load_prompt(f"prompts:/{name}@latest")
    except MlflowException:
        latest = None
    if latest is not None and sha256(latest.template) == digest:
        return int(latest.version)
    registered = mlflow.genai.register_prompt(
        name=name, template=text, commit_message=f"sha256 {digest[:12]}", tags={"sha256": digest}
    )
    return int(registered.version)


def use(name: str, text: str) -> PromptVersion:
    """Version ``text`` as prompt ``name`` and record it on the active run."""
    import mlflow

    if not NAME_RE.match(name or ""):
        raise BadInput(f"invalid prompt name {name!r}: letters, digits, '_', '.', '-'")
    if not text.strip():
        raise BadInput(f"prompt {name!r} is empty")
    run = mlflow.active_run()
    if run is None:
        raise MlcpError("prompts.use needs an active MLflow run")
    digest = sha256(text)
    version = _register(name, text, digest)
    mlflow.log_text(text, f"prompts/{name}.txt")
    listed = mlflow.get_run(run.info.run_id).data.tags.get("mlcp.prompts", "")
    entries = [e for e in listed.split(",") if e and not e.startswith(f"{name}:")]
    entries.append(f"{name}:{digest}")
    mlflow.set_tags(
        {
            f"mlcp.prompt.{name}.sha256": digest,
            f"mlcp.prompt.{name}.version": str(version),
            "mlcp.prompts": ",".join(entries),
        }
    )
    return PromptVersion(name, digest, version)


def find_runs(client, digest: str, name: str | None = None) -> list:
    """Runs, in any experiment, that used a prompt with this sha256 (optionally by name)."""
    if not re.fullmatch(r"[0-9a-f]{64}", digest or ""):
        raise BadInput(f"expected a sha256 hex digest, got {digest!r}")
    if name and not NAME_RE.match(name):
        raise BadInput(f"invalid prompt name {name!r}: letters, digits, '_', '.', '-'")
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    if name:
        flt = f"tags.`mlcp.prompt.{name}.sha256` = '{digest}'"
    else:
        flt = f"tags.`mlcp.prompts` LIKE '%:{digest}%'"
    return list(client.search_runs(experiment_ids, filter_string=flt, max_results=1000))
