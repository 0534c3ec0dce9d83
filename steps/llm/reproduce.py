"""The LLM side of ``mlcp reproduce``: a LoRA adapter trained again from a version's recorded
params, on the same instruction set and the same base model (both checked by digest).

The base model is loaded at the revision the version recorded (``mlcp.revision.base_model``:
the hub commit of a name, even one first loaded unpinned, or the digest of a folder or
``.tar``), never unpinned: a name whose version recorded no revision is refused (exit 2).

Given a ``steps.stages.reproduce.Request`` (the core resolves the version and checks the code);
returns what the core compares and records: the final eval loss and perplexity and the last
epoch's training loss, and the version registered when asked.
"""

from __future__ import annotations

from ..records import lineage, tracking
from ..spec import determinism
from ..spec.declare import csv
from ..stages import runner
from ..stages.reproduce import recorded_params
from ..stages.stage import Reporter
from . import BASE_MODEL_DIGEST_TAG, BASE_REVISION_TAG, PIPELINE, train
from . import data as llmdata

report = Reporter(PIPELINE, "reproduce")
COMPARED = ("final_eval_loss", "final_eval_perplexity", "epoch_train_loss")


def recorded_config(request) -> train.TrainConfig:
    """The training's config as its run recorded it, on the version's data and base."""
    params = request.params
    with recorded_params(request):
        return train.TrainConfig(
            model_name=request.model,
            data=request.data_uri,
            base_model=params["base_model_ref"],
            base_revision=request.tags.get(BASE_REVISION_TAG) or None,
            epochs=int(params["epochs"]),
            lr=float(params["lr"]),
            batch_size=int(params["batch_size"]),
            rank=int(params["lora_rank"]),
            alpha=float(params["lora_alpha"]),
            dropout=float(params["lora_dropout"]),
            target_modules=csv(params["target_modules"]),
            seed=int(params["seed"]),
            max_eval_perplexity=float(params.get("max_eval_perplexity", 2.0)),
            max_length=int(params["max_length"]),
            device=request.train_device,
        )


def reproduce(request) -> dict:
    import mlflow

    cfg = recorded_config(request)
    device = determinism.resolve_device(cfg.device)
    threads = determinism.recorded_threads(request.params)
    read, instructions = llmdata.read(request.data_uri)
    lineage.check_unchanged(read, request.data_digest, "the instruction set")
    base = train.load_base(cfg, cfg.base_model)
    lineage.check_unchanged(
        base.read, request.tags.get(BASE_MODEL_DIGEST_TAG, ""), "the base model"
    )
    determinism.enable(device, threads)
    data = train.prepare(cfg, read, instructions, base, device, threads)
    client = tracking.client()
    run_args = {"params": data.params, "system_metrics": True}
    with report.stage_run(cfg.model_name, data.name, **run_args) as run:
        mlflow.set_tags(dict(request.run_tags))
        train.log_base(cfg, base)
        llmdata.log(read, instructions, "training")
        runner.log_provenance(cfg)
        model, measured = train.fit(cfg, data, device, report)
        version = None
        if request.register:
            tags = dict(request.run_tags)
            version = train.register(client, cfg, model, data, run, tags)
            report(f"registered {request.model} v{version} tagged {tags}")
    return {
        "run_id": run.info.run_id,
        "run_name": data.name,
        "params": {k: str(v) for k, v in data.params.items()},
        "metrics": {name: measured[name] for name in COMPARED},
        "version": version,
    }
