"""Training throughput of the two pipelines' own training code, on the CPU and, where torch
sees one, on the GPU, from one run: a table, and the same figures as JSON.

    python -m tests.bench_gpu [--quick] [--json FILE]

It needs torch, torchvision, transformers, peft, tokenizers and scikit-learn, and no MLflow or
stack: it times the functions ``mlcp cv train`` and ``mlcp llm train`` run per step
(``steps.cv.train.train_epoch`` on the published digits, ``steps.llm.train.collate`` and a
LoRA step on the project's instruction set), so it can run on a GPU machine where only the
frameworks are installed. The "~1B" row is a Llama of TinyLlama's shape (22 layers, hidden
2048) built from a config with random weights: the size class of a real base, with the
project's 512-token vocabulary; its throughput stands for the cluster's GPU training, not
for quality. Figures are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def cv_images_per_s(device: str, image_size: int, batch_size: int, images: int) -> float:
    """ResNet-18 training images per second over ``images`` digits at ``image_size`` px."""
    import numpy as np
    import torch

    from steps.cv import data as cvdata
    from steps.cv.train import build_model, place, train_epoch
    from steps.records.lineage import DataRead

    raw = cvdata.build_digits(0)
    parsed = cvdata.parse(DataRead("memory://digits.npz", raw, hashlib.sha256(raw).hexdigest()))
    pool = parsed.images["train"]
    repeat = -(-images // len(pool))
    x = cvdata.preprocess(np.concatenate([pool] * repeat)[:images], image_size)
    y = np.concatenate([parsed.labels["train"]] * repeat)[:images]
    torch.manual_seed(0)
    model = place(build_model(10), device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    warm = min(len(y), batch_size * 3)
    train_epoch(model, optimizer, loss_fn, x[:warm], y[:warm], batch_size, rng, device)
    _sync(device)
    started = time.perf_counter()
    train_epoch(model, optimizer, loss_fn, x, y, batch_size, rng, device)
    _sync(device)
    return len(y) / (time.perf_counter() - started)


def lora_tokens_per_s(
    device: str, shape: str, batch_size: int, steps: int, dtype_name: str
) -> tuple[float, int]:
    """LoRA (r=8, every linear layer) training tokens per second; and the base's size."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from steps.llm import data as llmdata
    from steps.llm.train import DEFAULT_TARGETS, collate, encode
    from steps.records.lineage import DataRead

    tokenizer = llmdata.train_tokenizer()
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    hidden, layers, inter = {"tiny": (128, 2, 256), "1b": (2048, 22, 5632)}[shape]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        head_dim=64,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    torch.manual_seed(0)
    base = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    size = sum(p.numel() for p in base.parameters())
    model = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules=list(DEFAULT_TARGETS))
    )
    raw = llmdata.build_instructions(0)
    read = DataRead("memory://instructions.jsonl", raw, hashlib.sha256(raw).hexdigest())
    samples = llmdata.parse(read).samples["train"]
    encoded = encode(tokenizer, samples, llmdata.PROMPT_TEMPLATE, 64)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3)
    model.train()

    def step(index: int) -> int:
        start = (index * batch_size) % max(1, len(encoded) - batch_size)
        ids, labels, mask = (t.to(device) for t in collate(encoded[start:][:batch_size], pad))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int(mask.sum())

    for index in range(3):
        step(index)
    _sync(device)
    started = time.perf_counter()
    tokens = sum(step(index) for index in range(steps))
    _sync(device)
    return tokens / (time.perf_counter() - started), size


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name() if "cuda" in devices else "none"
    cpu_threads = torch.get_num_threads()
    rows: list[dict] = []

    def add(what: str, device: str, value: float, unit: str, note: str = "") -> None:
        rows.append({"what": what, "device": device, "value": value, "unit": unit, "note": note})
        print(f"  {what:<44} {device:<5} {value:>12,.0f} {unit}  {note}", flush=True)

    print(f"torch {torch.__version__}; CPU threads {cpu_threads}; GPU {gpu}", flush=True)
    cv_cases = [(32, 64, 256)] if args.quick else [(32, 128, 2048), (64, 128, 2048)]
    if not args.quick:
        cv_cases.append((224, 128, 2048))
    for size, batch, images in cv_cases:
        for device in devices:
            if device == "cpu" and size > 64:
                continue  # minutes per point on a CPU; the ratio at 32/64 px says enough
            n = images if device == "cuda" else min(images, 512)
            value = cv_images_per_s(device, size, batch, n)
            add(f"cv train: ResNet-18 {size}px batch {batch}", device, value, "img/s")
    llm_cases = [("tiny", 32, 5, "float32")]
    if not args.quick:
        llm_cases = [
            ("tiny", 32, 30, "float32"),
            ("1b", 16, 20, "bfloat16"),
            ("1b", 128, 10, "bfloat16"),
        ]
    for shape, batch, steps, dtype in llm_cases:
        for device in devices:
            if device == "cpu" and shape == "1b":
                continue
            value, size = lora_tokens_per_s(device, shape, batch, steps, dtype)
            add(
                f"llm train: LoRA r8 on {shape} ({size / 1e6:,.1f}M) b{batch}",
                device,
                value,
                "tok/s",
                dtype,
            )
    by = {(r["what"], r["device"]): r["value"] for r in rows}
    for what in dict.fromkeys(r["what"] for r in rows):
        if (what, "cpu") in by and (what, "cuda") in by:
            print(f"  {what}: GPU/CPU = {by[(what, 'cuda')] / by[(what, 'cpu')]:.1f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"gpu": gpu, "cpu_threads": cpu_threads, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
