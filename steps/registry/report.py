"""What a person reads about a model: its history of alias moves and the lineage of a
version (``mlcp history`` and ``mlcp lineage``), as data and as text."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from datetime import UTC, datetime

from ..decisions import gates
from ..records import provenance
from ..spec.contract import STAGE_TAG, show_version
from . import aliases
from .moves import history, quote, search_all

# ---------------------------------------------------------------------------- lineage


def lineage(client, model: str, alias: str) -> dict:
    """What ``model@alias`` is made of, and how it came to be there."""
    version = aliases.resolve(client, model, alias)
    mv = aliases.get_version(client, model, version)
    report: dict = {
        "model": model,
        "alias": alias,
        "version": version,
        "aliases": sorted(a for a, v in aliases.aliases_of(client, model).items() if v == version),
        "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
            timespec="seconds"
        ),
        "source": mv.source,
        "version_tags": {k: v for k, v in mv.tags.items() if not k.startswith("mlcp.gate.")},
    }
    training = None
    if mv.run_id:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):
            training = client.get_run(mv.run_id)
    runs = [training] if training is not None else []
    experiments = [e.experiment_id for e in client.search_experiments()]
    flt = (
        f"tags.`mlcp.model` = '{quote(model)}' AND tags.`mlcp.version` = '{version}' "
        "AND tags.`mlcp.kind` = 'stage'"
    )
    seen = {r.info.run_id for r in runs}
    runs += [r for r in search_all(client, experiments, flt) if r.info.run_id not in seen]
    report["training_run"] = (
        {
            "run_id": training.info.run_id,
            "run_name": training.info.run_name,
            "experiment_id": training.info.experiment_id,
            "params": dict(training.data.params),
            "metrics": dict(training.data.metrics),
        }
        if training is not None
        else None
    )
    # the code, image and environment the version was trained with (steps/records/provenance.py)
    report["provenance"] = provenance.of_run(training.data.tags) if training is not None else None
    datasets, prompts_used = [], []
    for run in runs:
        stage = run.data.tags.get(STAGE_TAG, "")
        for item in run.inputs.dataset_inputs if run.inputs else []:
            ds = item.dataset
            context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
            try:
                source = json.loads(ds.source).get("uri", ds.source)
            except (TypeError, ValueError):
                source = ds.source
            try:
                rows = json.loads(ds.profile).get("num_rows") if ds.profile else None
            except (TypeError, ValueError, AttributeError):
                rows = None
            datasets.append(
                {
                    "stage": stage,
                    "run_id": run.info.run_id,
                    "name": ds.name,
                    "digest": ds.digest,
                    "source": source,
                    "context": context,
                    "rows": rows,
                }
            )
        for key, value in run.data.tags.items():
            if key.startswith("mlcp.prompt.") and key.endswith(".sha256"):
                prompts_used.append(
                    {
                        "stage": stage,
                        "run_id": run.info.run_id,
                        "name": key[len("mlcp.prompt.") : -len(".sha256")],
                        "sha256": value,
                    }
                )
    report["datasets"] = datasets
    report["prompts"] = prompts_used
    report["gates"] = [asdict(s) for s in gates.decisions_of(client, model, version)]
    moves = [
        r
        for r in history(client, model, alias)
        if r.to_version == version and r.status == "FINISHED" and r.action not in ("noop", "sync")
    ]
    report["became"] = asdict(moves[-1]) if moves else None
    return report


def history_lines(records) -> list[str]:
    """The history as a table, oldest move first."""
    out: list[str] = []
    out.append(
        f"{'time (UTC)':<25} {'alias':<12} {'from':>5} -> {'to':<5} {'action':<9} "
        f"{'actor':<20} reason"
    )
    for r in records:
        why = r.error.splitlines()[0][:160] if r.error else "no reason recorded"
        mark = {"FINISHED": "", "FAILED": f" [refused, nothing moved: {why}]"}.get(
            r.status, f" [{r.status.lower()}: unconfirmed]"
        )
        workflow = f" (workflow {r.workflow_name})" if r.workflow_name else ""
        forced = " [forced]" if r.forced else ""
        moved = f"{show_version(r.from_version):>5} -> {show_version(r.to_version):<5}"
        if r.to_weight:  # a weight change at the router: the challenger's share
            moved = f"{r.from_weight + '%':>5} -> {r.to_weight + '%':<5}"
        out.append(
            f"{r.time:<25} {r.alias:<12} {moved} {r.action:<9} {r.actor[:20]:<20} "
            f"{r.reason}{forced}{workflow}{mark}"
        )
    return out


def provenance_lines(found: dict | None) -> list[str]:
    """The training run's code, image and environment, as lineage lines."""
    if not found:
        return []

    def show(value: str | None) -> str:
        return "not recorded" if value is None else value

    code, env = found["code"], found["environment"]
    libraries = ", ".join(
        f"{name} {show(value)}"
        for name, value in env.items()
        if name not in ("cuda", "gpu", "seeds")
    )
    return [
        f"  code: commit {show(code['commit'])}, package {show(code['package_version'])}"
        f" (ran {show(code['source'])})",
        f"  image: {show(found['image'])}",
        f"  environment: {libraries}",
        f"    cuda {show(env['cuda'])}, gpu {show(env['gpu'])}, seeds {show(env['seeds'])}",
        *_model_lines(found.get("models") or {}),
    ]


def _model_lines(models: dict) -> list[str]:
    """The revisions of the models the training loaded, and whether an unpinned load was
    allowed (steps/spec/pinning.py)."""
    revisions, unpinned = models.get("revisions") or {}, models.get("allow_unpinned")
    lines = [f"  model {name} at revision {value}" for name, value in revisions.items()]
    if unpinned:
        lines.append("  unpinned load allowed (--allow-unpinned): loaded by name, no commit")
    return lines


def lineage_lines(ref, report: dict) -> list[str]:
    """The lineage report as indented text."""
    out: list[str] = []
    out.append(f"{ref} = version {report['version']} (aliases: {', '.join(report['aliases'])})")
    out.append(f"  registered {report['created']} from {report['source']}")
    training = report["training_run"]
    if training:
        out.append(f"  training run {training['run_name']} ({training['run_id']})")
        for key, value in sorted(training["params"].items()):
            out.append(f"    {key} = {value}")
    else:
        out.append("  training run: none recorded")
    out += provenance_lines(report.get("provenance"))
    out.append("  datasets:" if report["datasets"] else "  datasets: none recorded")
    for ds in report["datasets"]:
        rows = f", {ds['rows']} rows" if ds["rows"] is not None else ""
        out.append(
            f"    [{ds['stage'] or '?'}/{ds['context']}] {ds['name']} digest {ds['digest']} "
            f"from {ds['source']}{rows}"
        )
    out.append("  prompts:" if report["prompts"] else "  prompts: none recorded")
    for prompt in report["prompts"]:
        out.append(f"    [{prompt['stage']}] {prompt['name']} sha256 {prompt['sha256']}")
    out.append("  gate decisions:" if report["gates"] else "  gate decisions: none recorded")
    for gate in report["gates"]:
        out.append(f"    {gate['name']}: {gate['verdict'] or 'unverified'} (run {gate['run_id']})")
        if gate.get("comparison"):
            out.append(f"      {gate['comparison']}")
    became = report["became"]
    if became:
        forced = " [forced]" if became["forced"] else ""
        out.append(
            f"  became {ref.alias} at {became['time']} by {became['actor']} "
            f"({became['action']} from {show_version(became['from_version'])}): "
            f"{became['reason'] or 'no reason given'}{forced}"
        )
    else:
        out.append(f"  no recorded move made it {ref.alias}")
    return out
