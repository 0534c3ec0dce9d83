"""``mlcp llm deploy``: reads ``candidate``, serves its adapter in vLLM's ``<model>-staged``
slot, writes ``staged``.

The adapter is downloaded from the version's artifacts and checked against the base the
server serves (its name, and the hidden size its weights were made for: vLLM itself would
load a misfit and generate garbage); a misfit is refused as bad input before anything is
placed or loaded. The adapter is placed in a folder the server reads
(``$MLCP_VLLM_ADAPTER_DIR/<model>/<version>``, default ``<stack home>/vllm/adapters``; in
the cluster a shared volume), loaded into the slot with the runtime LoRA API (in place: the
slot never stops answering), checked (vLLM must report the slot at that folder) and
smoke-tested with a completion, which is an MLflow trace of the deploy run
(steps/registry/traces.py). That happens on every replica (``$MLCP_VLLM_REPLICAS``), and once all of
them serve it the slot is recorded in the adapter volume's manifest, which a (re)started vLLM loads
(the launcher, steps/serving/vllm_launch.py). On any failure the slots are pointed back at what
they served, and no alias moves.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..base import settings
from ..base.environment import MLCP_VLLM_ADAPTER_DIR, MLCP_VLLM_SERVER_ADAPTER_DIR
from ..base.errors import BadInput, MlcpError
from ..registry import traces
from ..serving import vllm
from ..spec.contract import (
    CANDIDATE,
    MODEL_TAG,
    SLOT_TAG,
    SMOKE_CALL,
    STAGED,
    VERSION_TAG,
    show_version,
)
from ..spec.declare import Config, Stage, alias_option, option
from ..stages import runner
from ..stages.stage import Reporter
from . import (
    ADAPTER_PATH_TAG,
    ADAPTER_URI_TAG,
    HIDDEN_SIZE_TAG,
    PIPELINE,
    PROMPT_TEMPLATE_TAG,
    SMOKE_PROMPT_TAG,
)
from . import data as llmdata

ADAPTER_MARKER = "mlcp-adapter.json"
SMOKE_PROMPT = "repeat: red blue green"


@dataclass(kw_only=True)
class DeployConfig(Config):
    input_alias: str = alias_option(CANDIDATE, reads=True)
    output_alias: str = alias_option(STAGED, reads=False)
    vllm_url: str | None = vllm.url_option()
    adapter_dir: str | None = option(
        None,
        help="folder shared with the vLLM server where adapters are placed (empty: "
        "$MLCP_VLLM_ADAPTER_DIR, else the local stack's)",
    )
    smoke_prompt: str = option(
        SMOKE_PROMPT, help="instruction the loaded adapter must answer (a smoke test)"
    )
    max_tokens: int = option(8, help="tokens of the smoke answer", min=1, max=256)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.smoke_prompt.strip():
            raise BadInput("--smoke-prompt is empty")


report = Reporter(PIPELINE, "deploy")


def adapter_root(explicit: str | None = None) -> Path:
    """Where the steps place adapters: ``--adapter-dir``, ``$MLCP_VLLM_ADAPTER_DIR``, else
    ``<stack home>/vllm/adapters``."""
    chosen = explicit or MLCP_VLLM_ADAPTER_DIR.get()
    return (
        Path(chosen).expanduser().resolve()
        if chosen
        else settings.stack_home() / "vllm" / "adapters"
    )


def server_path(root: Path, model: str, version: str) -> str:
    """The adapter folder as the *server* sees it: ``$MLCP_VLLM_SERVER_ADAPTER_DIR`` when
    the shared volume is mounted elsewhere in the vLLM pod, else the same path."""
    seen = MLCP_VLLM_SERVER_ADAPTER_DIR.get()
    return str(Path(seen) / model / version) if seen else str(root / model / version)


def download(source_uri: str, dest: Path, client=None) -> Path:
    """The version's adapter folder, downloaded from its artifacts into ``dest`` (through
    ``client`` when given: the promote path's REST client; else with ``mlflow``)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if client is not None:
            from ..base.rest import download as fetch

            path = fetch(client, source_uri, dest)
        else:
            import mlflow

            path = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=source_uri, dst_path=str(dest))
            )
    except Exception as exc:
        raise MlcpError(f"cannot download the adapter from {source_uri}: {exc}") from exc
    return path


def place(folder: Path, root: Path, model: str, version: str, source_uri: str) -> Path:
    """Copy an adapter folder to ``<root>/<model>/<version>`` atomically; a complete copy of
    the same source that is already there is kept (the server may be reading it)."""
    dest = root / model / version
    marker = {"model": model, "version": version, "source": source_uri}
    try:
        if json.loads((dest / ADAPTER_MARKER).read_text()) == marker:
            return dest
    except (OSError, ValueError):
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{version}.{uuid.uuid4().hex[:8]}"
    shutil.copytree(folder, staging)
    (staging / ADAPTER_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


def fetch_checked(server, model: str, version: str, tags: dict, root: Path, client=None) -> tuple:
    """Download a version's adapter, refuse it unless it fits the served base, place it where
    the server reads it. Returns the folder as the server sees it, the served base, and the
    folder as this process sees it."""
    source = tags.get(ADAPTER_URI_TAG)
    if not source:
        raise BadInput(
            f"{model} v{version} records no adapter (tag mlcp.adapter_uri): "
            "was it trained by `mlcp llm train`?"
        )
    base = server.base_model_info()
    problems = vllm.check_fits(tags, base, vllm.served_hidden_size(base))
    with tempfile.TemporaryDirectory() as tmp:
        folder = download(source, Path(tmp), client)
        shape = vllm.adapter_shape(folder)
        if shape["hidden_size"] is not None and str(shape["hidden_size"]) != tags.get(
            HIDDEN_SIZE_TAG
        ):
            problems.append(
                f"its weights are for hidden size {shape['hidden_size']}, its tag says "
                f"{tags.get('mlcp.hidden_size')}"
            )
        if problems:
            raise BadInput(
                f"{model} v{version} does not fit the base vLLM serves at {server.url} "
                f"({base.name}): {'; '.join(problems)}; nothing was loaded"
            )
        placed = place(folder, root, model, version, source)
    return server_path(root, model, version), base, placed


class Smoke:
    """The smoke test of a slot: a completion of ``prompt`` on each replica once it serves
    the slot, the first one a trace tagged ``trace`` (when given); ``answers`` in order."""

    def __init__(self, slot: str, prompt: str, max_tokens: int = 8, trace: dict | None = None):
        self.slot, self.prompt, self.max_tokens, self.trace = slot, prompt, max_tokens, trace
        self.answers: list[str] = []

    def __call__(self, server) -> None:
        trace = self.trace if not self.answers else None
        with (
            traces.call(SMOKE_CALL, trace, {"model": self.slot, "prompt": self.prompt})
            if trace is not None
            else contextlib.nullcontext()
        ) as span:
            answer = server.complete(self.slot, self.prompt, self.max_tokens, stop=llmdata.STOP)
            if span is not None:
                span.set_outputs(answer)
        self.answers.append(answer)


def serve(server, slot: str, path: str, smoke=None) -> None:
    """Load ``path`` into ``slot`` (in place), check vLLM reports it there, and run
    ``smoke(server)``; on failure point the slot back at what it served."""
    before = server.adapters().get(slot, {}).get("path")
    try:
        server.load_adapter(slot, path)
        reported = server.adapters().get(slot, {}).get("path")
        if reported != path:
            raise MlcpError(f"vLLM reports slot {slot} at {reported!r}, not {path!r}")
        if smoke is not None:
            smoke(server)
    except Exception:
        if before and before != path:
            report(f"pointing {slot} back at {before}")
            try:
                server.load_adapter(slot, before)
            except Exception as exc:  # report the first failure, not this one
                report(f"could not restore {slot}: {exc}")
        raise


def serve_everywhere(
    servers, slot: str, path: str, smoke=None, *, root: Path, model: str, version: str
) -> None:
    """:func:`serve` on every replica in turn, then record the slot in the adapter volume's
    manifest, which servers load at start. When one replica fails, those already switched
    are pointed back at what they served and the error names the failing replica; the
    manifest is left as it was."""
    for server in servers:  # every replica answers before any of them changes
        server.require_live()
    switched = []
    for number, server in enumerate(servers, 1):
        before = server.adapters().get(slot, {}).get("path")
        try:
            serve(server, slot, path, smoke)
        except Exception as exc:
            for other, was in reversed(switched):
                _restore(other, slot, was)
            if len(servers) == 1:
                raise
            kind = type(exc) if isinstance(exc, MlcpError) else MlcpError
            raise kind(
                f"vLLM replica {server.url} ({number} of {len(servers)}) could not serve "
                f"{path} in {slot}, so no replica changed: {exc}"
            ) from exc
        switched.append((server, before))
    vllm.record_slot(root, slot, path, model, version)


def _restore(server, slot: str, was: str | None) -> None:
    report(f"pointing {slot} on {server.url} back at {was or 'nothing'}")
    try:
        if was:
            server.load_adapter(slot, was)
        else:
            server.unload_adapter(slot)
    except Exception as exc:  # report the first failure, not this one
        report(f"could not restore {slot} on {server.url}: {exc}")


def require_slot(server, model: str, slot: str, version: str, tags: dict, *, fix: str) -> str:
    """``slot``, checked to serve ``version``'s adapter (the folder its deploy placed, tag
    ``mlcp.adapter_path``); MlcpError naming what it serves instead, and ``fix``."""
    served = server.adapters().get(slot, {}).get("path")
    if not served or served != tags.get(ADAPTER_PATH_TAG):
        folder = Path(served) if served else None
        other = (
            f" ({show_version(folder.name)})"
            if folder is not None and folder.parent.name == model and folder.name.isdigit()
            else ""
        )
        raise MlcpError(
            f"vLLM slot {slot} serves {served or 'nothing'}{other}, not "
            f"{show_version(version)}: {fix}"
        )
    return slot


def served_paths(server, slots) -> dict[str, str | None]:
    """The adapter folder each slot serves now."""
    adapters = server.adapters()
    return {slot: adapters.get(slot, {}).get("path") for slot in slots if slot}


def unchanged(server, before: dict[str, str | None]) -> None:
    """After a measurement: MlcpError when a measured slot was repointed meanwhile (a deploy
    or a promotion), so its answers or timings mixed two versions."""
    now = served_paths(server, before)
    for slot, path in before.items():
        if now[slot] != path:
            raise MlcpError(
                f"vLLM slot {slot} was repointed during the measurement ({path} -> "
                f"{now[slot]}): nothing was judged, run the stage again"
            )


class Deploy(runner.Deployer):
    report = report

    def connect(self, t):
        servers = vllm.replicas(t.cfg.vllm_url)
        for server in servers:
            server.require_live()
        t.extra["root"] = adapter_root(t.cfg.adapter_dir)
        return servers

    def run_name(self, t):
        return {"v": t.version, "slot": "staged"}

    def params(self, t):
        return {
            "input_alias": t.cfg.input_alias,
            "slot": t.slot,
            "adapter_dir": str(t.extra["root"]),
            "vllm_url": ",".join(s.url for s in t.server),
            "smoke_prompt": t.cfg.smoke_prompt,
        }

    def export(self, t):
        import time

        import mlflow

        cfg, version, slot, root = t.cfg, t.version, t.slot, t.extra["root"]
        path, base, placed = fetch_checked(t.server[0], t.model, version, t.tags, root)
        report(f"{t.model} v{version} fits {base.name}; placed at {placed}")
        template = t.tags.get(PROMPT_TEMPLATE_TAG, llmdata.PROMPT_TEMPLATE)
        started = time.perf_counter()
        traces.autolog()  # the smoke completion is a trace of this run
        smoke = Smoke(
            slot,
            llmdata.format_prompt(cfg.smoke_prompt, template),
            cfg.max_tokens,
            trace={MODEL_TAG: t.model, VERSION_TAG: version, SLOT_TAG: slot},
        )
        # what the vLLM back end's switch does (steps/llm/serving.py): each replica pointed
        # back at what it served when one fails; the manifest recorded once all serve it
        serve_everywhere(t.server, slot, path, smoke, root=root, model=t.model, version=version)
        answer = smoke.answers[0] if smoke.answers else ""
        mlflow.log_dict(
            {"slot": slot, "path": path, "prompt": cfg.smoke_prompt, "answer": answer},
            "deploy/smoke.json",
        )
        t.client.set_model_version_tag(t.model, version, ADAPTER_PATH_TAG, path)
        t.client.set_model_version_tag(t.model, version, SMOKE_PROMPT_TAG, cfg.smoke_prompt)
        report(f"{slot} serves v{version} ({path}); smoke answer {answer.strip()!r}")
        return runner.Measured(
            metrics={"smoke_ok": 1.0, "load_and_smoke_seconds": time.perf_counter() - started},
            reason=f"loaded into vLLM slot {slot}",
            result={"version": version, "slot": slot, "path": path, "smoke_answer": answer.strip()},
        )


GATES = ()  # the fit check refuses a misfit as bad input; no gate is recorded
STAGE = Stage(
    PIPELINE,
    "deploy",
    "load the adapter into vLLM's staged slot",
    DeployConfig,
    Deploy(),
    GATES,
    title="LLM: deploy to vLLM's staged slot (candidate -> staged)",
    description=(
        "Checks input-alias's (candidate) adapter against the base vLLM serves, places it on "
        "the adapter volume vLLM reads, loads it into the <model>-staged slot at runtime, "
        "smoke-tests it and points output-alias (staged) at it."
    ),
)
