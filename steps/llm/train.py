"""``mlcp llm train``: a LoRA adapter (peft) on the base model; writes ``candidate`` on a pass.

Reads: the instruction data set and the base model (both logged as lineage). Writes: the
adapter folder (``adapter_config.json`` + safetensors) as the run's ``adapter`` artifact,
registered as a model version tagged with what it needs from a base (``mlcp.base_model``,
``mlcp.hidden_size``, ``mlcp.lora_rank``, ``mlcp.target_modules``, the data's source and
digest), the loss curves, eval loss and perplexity, the decision of the training gate
(maximum eval perplexity) and, only when it passes, the alias ``candidate``.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from ..base.errors import BadInput
from ..decisions import gates
from ..records import tracking
from ..records.lineage import DataRead
from ..spec import determinism, pinning
from ..spec.contract import CANDIDATE, GPU_TAG
from ..spec.declare import Config, Stage, alias_option, option
from ..spec.determinism import device_option
from ..stages import runner
from ..stages.stage import Reporter
from . import (
    ADAPTER_URI_TAG,
    BASE_INPUT,
    BASE_MODEL_DIGEST_TAG,
    BASE_MODEL_REF_TAG,
    BASE_MODEL_TAG,
    HIDDEN_SIZE_TAG,
    PIPELINE,
    PROMPT_TEMPLATE_TAG,
)
from . import data as llmdata

TARGET_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
# Every linear layer of a Llama block: on a small base, the MLP's share of the adapter is
# what makes the three instructions learnable in a few seconds.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


MAX_EVAL_PERPLEXITY = "max-eval-perplexity"
GATES = (MAX_EVAL_PERPLEXITY,)


@dataclass(kw_only=True)
class TrainConfig(Config):
    output_alias: str = alias_option(CANDIDATE, reads=False)
    data: str | None = option(
        None,
        help="instruction set URI (JSONL), s3://... or a file (empty: the published set)",
    )
    base_model: str | None = option(
        None,
        help="base model: a .tar (s3:// or a file), a folder or a model name "
        "(empty: $MLCP_LLM_BASE_MODEL, else the published one)",
    )
    base_revision: str | None = option(
        None,
        help="the pinned revision of base-model: for a model name, the hub commit (40 hex, "
        "required unless allow-unpinned); for a folder or .tar, the sha256:<digest> its bytes "
        "must have (empty: $MLCP_LLM_BASE_REVISION with the base from the environment; a "
        "folder or .tar is pinned by the digest it has)",
    )
    allow_unpinned: bool = option(
        False,
        help="load a base model given by name without a commit as its revision (recorded on "
        "the run as mlcp.allow_unpinned=true)",
    )
    epochs: int = option(12, help="training epochs", min=1, max=10000)
    lr: float = option(3e-3, help="AdamW learning rate", above=0, below=1)
    batch_size: int = option(32, help="samples per training step", min=1, max=65536)
    rank: int = option(8, help="LoRA rank", min=1, max=256)
    alpha: float = option(16.0, help="LoRA alpha (scaling)", above=0)
    dropout: float = option(0.0, help="LoRA dropout", min=0, below=1)
    target_modules: tuple[str, ...] = option(
        DEFAULT_TARGETS,
        help="comma-separated modules to adapt (default: every linear layer of a block)",
    )
    seed: int = option(0, help="random seed of the initialisation and shuffling")
    max_eval_perplexity: float = option(
        2.0,
        help="gate max-eval-perplexity: the highest validation perplexity that writes candidate",
        min=1,
    )
    max_length: int = option(64, help="tokens per training sample", min=8, max=4096)
    device: str = device_option()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.target_modules or any(not TARGET_RE.match(t) for t in self.target_modules):
            raise BadInput(
                f"--target-modules must be module names such as q_proj,v_proj, got "
                f"{','.join(self.target_modules) or '(none)'}"
            )


report = Reporter(PIPELINE, "train")


def encode(tokenizer, samples, template: str, max_length: int) -> list[tuple[list, list]]:
    """(input ids, labels) per sample: the prompt is masked, the response and EOS are learnt.
    The prompt is tokenized alone, exactly as the server will see it."""
    encoded = []
    for sample in samples:
        prompt = tokenizer(llmdata.format_prompt(sample.prompt, template))["input_ids"]
        answer = tokenizer(" " + sample.response)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + answer)[:max_length]
        labels = ([-100] * len(prompt) + answer)[:max_length]
        encoded.append((ids, labels))
    return encoded


def collate(batch, pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (x, y) in enumerate(batch):
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return ids, labels, mask


def mean_loss(model, encoded, pad_id: int, batch_size: int = 64, device: str = "cpu") -> float:
    """The loss per answer token over ``encoded`` (the prompt tokens are not counted)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            ids, labels, mask = (
                t.to(device) for t in collate(encoded[start : start + batch_size], pad_id)
            )
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            target = labels[:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                target.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(losses)
            count += int((target != -100).sum())
    model.train()
    return total / max(count, 1)


@dataclass
class Prepared:
    """The instruction set encoded for the base model, and what the training run is named and
    records."""

    read: DataRead
    instructions: llmdata.InstructionSet
    base: llmdata.BaseModel
    tokenizer: Any
    pad_id: int
    template: str
    train_set: list
    val_set: list
    name: str
    params: dict


def hyper(cfg: TrainConfig) -> dict:
    """The hyperparameters a training run's name shows."""
    return {"r": cfg.rank, "lr": cfg.lr, "bs": cfg.batch_size, "e": cfg.epochs}


def recipe(base: llmdata.BaseModel) -> str:
    """The first word of a training run's name: the adapter's kind and its base."""
    return f"lora-{base.name}"


def prepare(
    cfg: TrainConfig, read: DataRead, instructions, base, device: str, threads: int
) -> Prepared:
    """Tokenize and encode the samples for ``base``; the run's name and params (one place:
    a reproduction records what the training recorded)."""
    llmdata.quiet_transformers()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.folder)
    if tokenizer.eos_token_id is None:
        raise BadInput(f"base model {base.ref}: its tokenizer has no end-of-sequence token")
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    template = llmdata.PROMPT_TEMPLATE
    train_set = encode(tokenizer, instructions.samples["train"], template, cfg.max_length)
    val_set = encode(tokenizer, instructions.samples["val"], template, cfg.max_length)
    params = {
        "base_model": base.name,
        "base_model_ref": base.ref,
        "base_revision": base.revision,
        "allow_unpinned": cfg.allow_unpinned,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "lora_rank": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": ",".join(cfg.target_modules),
        "seed": cfg.seed,
        "max_eval_perplexity": cfg.max_eval_perplexity,
        "max_length": cfg.max_length,
        "train_samples": len(train_set),
        "val_samples": len(val_set),
        "device": device,
        determinism.THREADS_PARAM: threads,
    }
    return Prepared(
        read=read,
        instructions=instructions,
        base=base,
        tokenizer=tokenizer,
        pad_id=pad_id,
        template=template,
        train_set=train_set,
        val_set=val_set,
        name=tracking.run_name(recipe(base), hyper(cfg), read.digest),
        params=params,
    )


def fit(cfg: TrainConfig, data: Prepared, device: str, say=None) -> tuple[Any, dict[str, float]]:
    """Train the adapter in the active run (the loss curves, eval loss and perplexity) and
    measure it: the model and its measures (``final_eval_loss``, ``final_eval_perplexity``,
    ``epoch_train_loss``, ``initial_eval_loss``, ``trainable_parameters``). Registers
    nothing, and leaves the seed's and the environment's records to its caller (the runner,
    or a reproduction)."""
    import mlflow
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    say = say or report
    base, train_set, val_set, pad_id = data.base, data.train_set, data.val_set, data.pad_id
    torch.manual_seed(cfg.seed)  # the adapter's initialisation and its dropout
    model = AutoModelForCausalLM.from_pretrained(base.folder, dtype=torch.float32)
    try:
        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.rank,
                lora_alpha=cfg.alpha,
                lora_dropout=cfg.dropout,
                target_modules=list(cfg.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise BadInput(f"--target-modules {','.join(cfg.target_modules)}: {exc}") from None
    model = model.to(device)
    if device == "cuda":
        mlflow.set_tag(GPU_TAG, torch.cuda.get_device_name())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], cfg.lr)
    steps_per_epoch = (len(train_set) + cfg.batch_size - 1) // cfg.batch_size
    total_steps = steps_per_epoch * cfg.epochs
    warmup = max(1, total_steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / (total_steps - warmup))),
    )
    initial = mean_loss(model, val_set, pad_id, device=device)
    mlflow.log_metrics({"eval_loss": initial, "eval_perplexity": math.exp(initial)}, step=0)
    say(
        f"{data.name}: {len(train_set)} samples, {steps_per_epoch} steps per epoch, "
        f"{trainable} trainable parameters; eval_loss {initial:.4f} before training"
    )
    generator = torch.Generator().manual_seed(cfg.seed)  # the data order
    started = time.monotonic()
    step, eval_loss, train_loss = 0, initial, float("nan")
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        order = torch.randperm(len(train_set), generator=generator).tolist()
        epoch_total, window = 0.0, []
        for index in range(steps_per_epoch):
            batch = [train_set[i] for i in order[index * cfg.batch_size :][: cfg.batch_size]]
            ids, labels, mask = (t.to(device) for t in collate(batch, pad_id))
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            value = loss.item()
            epoch_total += value
            window.append(value)
            if step % 10 == 0 or index == steps_per_epoch - 1:
                mlflow.log_metrics(
                    {"train_loss": sum(window) / len(window), "lr": scheduler.get_last_lr()[0]},
                    step=step,
                )
                window = []
            if step % 25 == 0:
                say(f"step {step}/{total_steps}: loss {value:.4f}")
        eval_loss = mean_loss(model, val_set, pad_id, device=device)
        train_loss = epoch_total / steps_per_epoch
        mlflow.log_metrics(
            {
                "epoch_train_loss": train_loss,
                "eval_loss": eval_loss,
                "eval_perplexity": math.exp(eval_loss),
            },
            step=step,
        )
        say(
            f"epoch {epoch}/{cfg.epochs}: train_loss {train_loss:.4f}, eval_loss "
            f"{eval_loss:.4f}, perplexity {math.exp(eval_loss):.3f} "
            f"({time.monotonic() - started:.1f} s so far)"
        )
    measured = {
        "final_eval_loss": eval_loss,
        "final_eval_perplexity": math.exp(eval_loss),
        "epoch_train_loss": train_loss,
        "initial_eval_loss": initial,
        "trainable_parameters": trainable,
    }
    mlflow.log_metrics(
        {
            "train_seconds": time.monotonic() - started,
            "final_eval_loss": eval_loss,
            "final_eval_perplexity": measured["final_eval_perplexity"],
            "eval_loss_improvement": initial - eval_loss,
            "trainable_parameters": trainable,
        }
    )
    return model, measured


def revision_tags(cfg: TrainConfig, base: llmdata.BaseModel) -> dict[str, str]:
    """The base model's revision and whether an unpinned load was allowed, as tags."""
    return pinning.tags({BASE_INPUT: base.revision}, allow_unpinned=cfg.allow_unpinned)


def load_base(cfg: TrainConfig, base_ref: str) -> llmdata.BaseModel:
    """The base model at its pinned revision (BadInput for a name without one, unless
    ``cfg.allow_unpinned``)."""
    revision = cfg.base_revision or llmdata.default_revision(cfg.base_model)
    return llmdata.materialize(base_ref, revision, allow_unpinned=cfg.allow_unpinned)


def log_adapter(model, data: Prepared) -> str:
    """Log the adapter folder as the active run's ``adapter`` artifact (naming its base by
    the name the server serves it under); the folder's URI, which the version is made from."""
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "adapter"
        model.cpu().save_pretrained(folder)  # CPU tensors: any reader can load them
        # the adapter names its base by the name the server serves it under, not by the
        # local folder it was trained from
        config_path = folder / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = data.base.name
        config_path.write_text(json.dumps(adapter_config, indent=2) + "\n")
        mlflow.log_artifacts(str(folder), "adapter")
    return f"{mlflow.get_artifact_uri()}/adapter"


def version_tags(cfg: TrainConfig, data: Prepared, run_id: str) -> dict[str, str]:
    """What a version's readers need from its base and its adapter, besides the runner's
    tags (its pipeline, the data read, the training run)."""
    base = data.base
    return {
        BASE_MODEL_TAG: base.name,
        BASE_MODEL_REF_TAG: base.ref,
        BASE_MODEL_DIGEST_TAG: base.read.digest,
        HIDDEN_SIZE_TAG: str(base.hidden_size),
        "mlcp.lora_rank": str(cfg.rank),
        "mlcp.lora_alpha": f"{cfg.alpha:g}",
        "mlcp.target_modules": ",".join(cfg.target_modules),
        PROMPT_TEMPLATE_TAG: data.template,
        ADAPTER_URI_TAG: f"runs:/{run_id}/adapter",
        **revision_tags(cfg, base),
    }


def register(client, cfg: TrainConfig, model, data: Prepared, run, tags: dict | None = None) -> str:
    """Log the adapter in the active run and register it as a new version of
    ``cfg.model_name`` (a reproduction's; a training's is the runner's)."""
    run_id = run.info.run_id
    source = log_adapter(model, data)
    extra = {**version_tags(cfg, data, run_id), **(tags or {})}
    return runner.register(client, cfg.model_name, PIPELINE, source, data.read, run_id, extra)


def log_base(cfg: TrainConfig, base: llmdata.BaseModel) -> None:
    """In the active run: the base model's revision tags and its lineage (an input)."""
    import mlflow

    from ..records import lineage

    mlflow.set_tags(revision_tags(cfg, base))
    lineage.log(base.read, name=base.name, num_rows=1, context="base-model")


class Train(runner.Trainer):
    """A LoRA adapter on the runner: the base loaded and the samples encoded (``prepare``),
    then ``fit``."""

    report = report
    data = llmdata
    system_metrics = True

    def prepare(self, t):
        cfg = t.cfg
        base_ref = cfg.base_model or llmdata.default_base()
        if not base_ref:
            raise BadInput(
                "no --base-model given and neither MLCP_LLM_BASE_MODEL nor MLCP_DATA_ROOT is set"
            )
        base = load_base(cfg, base_ref)
        determinism.enable(t.device)
        t.extra["prepared"] = prepare(cfg, t.read, t.data, base, t.device, determinism.CPU_THREADS)

    def named_after(self, t):
        return recipe(t.extra["prepared"].base)

    def run_name(self, t):
        return hyper(t.cfg)

    def params(self, t):
        return t.extra["prepared"].params

    def fit(self, t):
        import mlflow

        cfg, data = t.cfg, t.extra["prepared"]
        log_base(cfg, data.base)
        model, measured = fit(cfg, data, t.device)
        eval_loss, perplexity = measured["final_eval_loss"], measured["final_eval_perplexity"]
        initial = math.exp(measured["initial_eval_loss"])
        run_id = mlflow.active_run().info.run_id
        gate = gates.Gate(MAX_EVAL_PERPLEXITY, "eval_perplexity", "<=", cfg.max_eval_perplexity)
        return runner.Trained(
            model_info=log_adapter(model, data),
            metric="eval_perplexity",
            value=perplexity,
            checks=[(gate, perplexity)],
            evidence={
                "initial_eval_perplexity": initial,
                "eval_loss": eval_loss,
                "val_samples": len(data.val_set),
            },
            tags=version_tags(cfg, data, run_id),
            reason=f"training gate passed (eval perplexity {perplexity:.4f})",
            result={
                "eval_loss": eval_loss,
                "eval_perplexity": perplexity,
                "initial_eval_perplexity": initial,
                "base_model": data.base.name,
                "base_revision": data.base.revision,
            },
        )


STAGE = Stage(
    PIPELINE,
    "train",
    "train a LoRA adapter; writes candidate on a pass",
    TrainConfig,
    Train(),
    GATES,
    title="LLM: train a LoRA adapter (writes candidate)",
    description=(
        "Trains a LoRA adapter (transformers + peft) on the base model with the versioned "
        "instruction set, registers the version, records the max-eval-perplexity gate and "
        "points output-alias (candidate) at it only on a pass."
    ),
)
