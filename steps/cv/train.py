"""``mlcp cv train``: ResNet-18 on the versioned image set; writes ``candidate`` on a pass.

Reads: the data set (lineage logged). Writes: a registered model version (logged with a
signature and an input example), the decision of the training gate (minimum validation
accuracy), and, only when it passes, the alias ``candidate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..base.errors import BadInput
from ..decisions import gates
from ..records import tracking
from ..records.lineage import DataRead
from ..spec import determinism
from ..spec.contract import CANDIDATE, GPU_TAG
from ..spec.declare import Config, Stage, alias_option, option
from ..spec.determinism import device_option
from ..stages import runner
from ..stages.stage import Reporter
from . import IMAGE_SIZE_TAG, NUM_CLASSES_TAG, PIPELINE
from . import data as cvdata

MIN_VAL_ACCURACY = "min-val-accuracy"
GATES = (MIN_VAL_ACCURACY,)
RECIPE = "resnet18"  # the first word of a training run's name


@dataclass(kw_only=True)
class TrainConfig(Config):
    output_alias: str = alias_option(CANDIDATE, reads=False)
    data: str | None = option(
        None, help="data set URI, s3://... or a folder (empty: the published digits set)"
    )
    epochs: int = option(3, help="training epochs", min=1, max=10000)
    lr: float = option(0.05, help="SGD learning rate", above=0, max=10)
    batch_size: int = option(32, help="images per training step", min=1, max=65536)
    image_size: int = option(32, help="side of the square input images", min=8, max=512)
    seed: int = option(0, help="random seed of the initialisation and shuffling")
    min_val_accuracy: float = option(
        0.8,
        help="gate min-val-accuracy: the lowest validation accuracy that writes candidate",
        min=0,
        max=1,
    )
    weights: str | None = option(
        None,
        help="ResNet-18 state_dict file in the image to start from (empty: random init)",
    )
    device: str = device_option()


report = Reporter(PIPELINE, "train")


def build_model(num_classes: int, weights: str | None = None):
    import torch
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    if weights:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BadInput(f"--weights {weights}: not a readable state_dict file: {exc}") from None
        # A backbone trained for another number of classes: keep all but the classifier.
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("fc.") for k in missing):
            raise BadInput(f"--weights {weights} is not a ResNet-18 state_dict")
    return model


def accuracy(model, x, y, batch_size: int = 256, device: str = "cpu") -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            logits = model(torch.from_numpy(x[start : start + batch_size]).to(device))
            predicted = logits.argmax(1).cpu().numpy()
            correct += int((predicted == y[start : start + batch_size]).sum())
    return correct / max(len(y), 1)


def place(model, device: str):
    """The model on ``device``; on a GPU in channels-last layout, which its convolutions run
    fastest in (``train_epoch`` feeds it batches in the same layout)."""
    import torch

    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device == "cuda" else model


def train_epoch(model, optimizer, loss_fn, x, y, batch_size: int, rng, device: str) -> float:
    """One pass over (x, y) in a shuffled order; the mean training loss. The loss is read back
    once per epoch, not per step, so the GPU is not stalled on every batch."""
    import torch

    model.train()
    order = rng.permutation(len(y))
    total = torch.zeros((), device=device)
    layout = torch.channels_last if device == "cuda" else torch.contiguous_format
    for start in range(0, len(y), batch_size):
        index = order[start : start + batch_size]
        xb = torch.from_numpy(x[index]).to(device, non_blocking=True, memory_format=layout)
        yb = torch.from_numpy(y[index]).to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(index)
    return float(total) / max(len(y), 1)


@dataclass
class Prepared:
    """A data set made ready to train on, and what the training run is named and records."""

    read: DataRead
    images: cvdata.ImageSet
    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    name: str
    params: dict


def hyper(cfg: TrainConfig) -> dict:
    """The hyperparameters a training run's name shows."""
    return {"lr": cfg.lr, "bs": cfg.batch_size, "e": cfg.epochs, "s": cfg.image_size}


def prepare(cfg: TrainConfig, read: DataRead, images, device: str, threads: int) -> Prepared:
    """The model's inputs and the run's name and params, from the config and the data read
    (one place: a reproduction records what the training recorded)."""
    return Prepared(
        read=read,
        images=images,
        x_train=cvdata.preprocess(images.images["train"], cfg.image_size),
        y_train=images.labels["train"],
        x_val=cvdata.preprocess(images.images["val"], cfg.image_size),
        y_val=images.labels["val"],
        name=tracking.run_name(RECIPE, hyper(cfg), read.digest),
        params={
            "epochs": cfg.epochs,
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "image_size": cfg.image_size,
            "seed": cfg.seed,
            "weights": cfg.weights or "none",
            "min_val_accuracy": cfg.min_val_accuracy,
            "num_classes": len(images.classes),
            "device": device,
            determinism.THREADS_PARAM: threads,
        },
    )


def fit(cfg: TrainConfig, data: Prepared, device: str, say=None) -> tuple[Any, dict[str, float]]:
    """Train ResNet-18 in the active run (metrics per epoch) and measure it: the model (on
    the CPU, in eval mode) and its final ``val_accuracy`` and ``train_loss``. Registers
    nothing, and leaves the seed's and the environment's records to its caller (the runner,
    or a reproduction)."""
    import mlflow
    import numpy as np
    import torch

    say = say or report
    x_train, y_train, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)  # the data order
    model = place(build_model(len(data.images.classes), cfg.weights), device)
    if device == "cuda":
        mlflow.set_tag(GPU_TAG, torch.cuda.get_device_name())
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps_per_epoch = (len(y_train) + cfg.batch_size - 1) // cfg.batch_size
    say(
        f"{data.name}: {len(y_train)} training images, {steps_per_epoch} steps per epoch on "
        f"{device}"
    )
    started = time.monotonic()
    val_acc, train_loss = 0.0, float("nan")
    for epoch in range(1, cfg.epochs + 1):
        train_loss = train_epoch(
            model, optimizer, loss_fn, x_train, y_train, cfg.batch_size, rng, device
        )
        val_acc = accuracy(model, x_val, y_val, device=device)
        mlflow.log_metrics({"train_loss": train_loss, "val_accuracy": val_acc}, step=epoch)
        say(
            f"epoch {epoch}/{cfg.epochs}: train_loss {train_loss:.4f}, val_accuracy "
            f"{val_acc:.4f} ({time.monotonic() - started:.0f} s so far)"
        )
    seconds = time.monotonic() - started
    mlflow.log_metrics(
        {"train_seconds": seconds, "train_images_per_s": cfg.epochs * len(y_train) / seconds}
    )
    # logged for CPU readers (deploy exports ONNX on a CPU pod), in the usual layout
    model = model.cpu().to(memory_format=torch.contiguous_format)
    model.eval()
    return model, {"val_accuracy": val_acc, "train_loss": train_loss}


def log_model(model, data: Prepared):
    """Log ``model`` in the active run with its signature and an input example; what
    ``mlflow.pytorch.log_model`` returned."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    example = data.x_val[:2]
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    return mlflow.pytorch.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        serialization_format="pickle",
    )


def version_tags(cfg: TrainConfig, data: Prepared) -> dict[str, str]:
    """What a version's readers need besides the runner's tags: the input size and classes."""
    return {IMAGE_SIZE_TAG: str(cfg.image_size), NUM_CLASSES_TAG: str(len(data.images.classes))}


def register(
    client, cfg: TrainConfig, model, data: Prepared, run_id: str, tags: dict | None = None
) -> str:
    """Log ``model`` in the active run and register it as a new version of
    ``cfg.model_name`` (a reproduction's; a training's is the runner's)."""
    info = log_model(model, data)
    extra = {**version_tags(cfg, data), **(tags or {})}
    return runner.register(client, cfg.model_name, PIPELINE, info, data.read, run_id, extra)


class Train(runner.Trainer):
    """ResNet-18 on the runner: the data made ready (``prepare``), then ``fit``."""

    report = report
    data = cvdata
    system_metrics = True

    def prepare(self, t):
        determinism.enable(t.device)
        t.extra["prepared"] = prepare(t.cfg, t.read, t.data, t.device, determinism.CPU_THREADS)

    def named_after(self, t):
        return RECIPE

    def run_name(self, t):
        return hyper(t.cfg)

    def params(self, t):
        return t.extra["prepared"].params

    def fit(self, t):
        data = t.extra["prepared"]
        model, measured = fit(t.cfg, data, t.device)
        val_acc = measured["val_accuracy"]
        gate = gates.Gate(MIN_VAL_ACCURACY, "val_accuracy", ">=", t.cfg.min_val_accuracy)
        return runner.Trained(
            model_info=log_model(model, data),
            metric="val_accuracy",
            value=val_acc,
            checks=[(gate, val_acc)],
            tags=version_tags(t.cfg, data),
            result={"val_accuracy": val_acc},
        )


STAGE = Stage(
    PIPELINE,
    "train",
    "train ResNet-18; writes candidate on a pass",
    TrainConfig,
    Train(),
    GATES,
    title="CV: train ResNet-18 (writes candidate)",
    description=(
        "Trains ResNet-18 on the versioned image set, registers the version, records the "
        "min-val-accuracy gate and points output-alias (candidate) at it only on a pass."
    ),
)
