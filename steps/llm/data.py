"""The LLM data: an instruction data set and a small base model, both versioned files.

Instruction file format (one JSONL file, written by ``mlcp data llm``): one JSON object per
line, ``{"id": ..., "split": "train"|"val"|"eval", "prompt": ..., "response": ...}``. The
default set holds three instructions a LoRA adapter learns in seconds and that can be
checked exactly, over ordered triples of 16 words: ``repeat: red blue green`` -> ``red blue
green``, ``first: ...`` -> ``red``, ``last: ...`` -> ``green``; split with a fixed seed (no
eval triple is ever trained on). A malformed line is refused with its line number.
``mlcp data llm`` publishes it as a version of the data set ``llm/instructions``
(steps/records/datasets.py): ``<root>/llm/instructions/<variant>-seed<seed>/instructions.jsonl``,
then points ``newest`` at it. Another seed is a new split of the same distribution; a variant
(:data:`VARIANTS`) is the world moved: a changed task mix, or longer prompts.

The base model is a setting: a ``.tar`` of a ``save_pretrained`` folder (``s3://`` or local),
a local folder, or a model name (resolved through the Hugging Face cache; in the cluster that
may be a 7B base). A name is loaded at a pinned revision, a commit of the hub
(steps/spec/pinning.py: refused without one unless unpinned loads are allowed); a folder or ``.tar``
is pinned by the digest of its bytes. The default one is made here, with no download: a byte-level
BPE tokenizer trained on the text in :mod:`.corpus`, wrapped in ``PreTrainedTokenizerFast``, and
a randomly initialised two-layer Llama (hidden size 128, head dim 64; weights drawn with
standard deviation 0.1, so that a frozen random base's logits can still become sharp
through an adapter), saved with
``save_pretrained`` and published as ``model.tar``. Its name (the one vLLM serves it under,
and that adapters record) is in the folder's ``mlcp-base.json``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import random
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..base.environment import (
    MLCP_CACHE_DIR,
    MLCP_DATA_ROOT,
    MLCP_LLM_BASE_MODEL,
    MLCP_LLM_BASE_REVISION,
)
from ..base.errors import BadInput, MlcpError
from ..records import datasets
from ..records.lineage import DataRead
from ..stages.stage import say

SPLITS = ("train", "val", "eval")
SIZES = {"train": 1200, "val": 99, "eval": 60}
TASKS = ("repeat", "first", "last")
DATASET = "llm/instructions"  # the versioned data set under the data root
FILE = "instructions.jsonl"
DEFAULT_KEY = f"{DATASET}/{datasets.version_name(datasets.BASE_VARIANT, 0)}/{FILE}"
# The variants ``mlcp data llm --variant`` publishes (for demos and tests of drift).
VARIANTS = {
    datasets.BASE_VARIANT: "the three tasks in turn, over three words",
    "task-mix": "a changed task mix: repeat seven times in ten, first and last the rest",
    "long-prompts": "longer prompts: the same tasks over five words",
}
BASE_NAME = "mlcp-tiny-llama"
BASE_KEY = f"llm/base/{BASE_NAME}/v1/model.tar"
BASE_INFO_FILE = "mlcp-base.json"
# How a sample's prompt is shown to the model, in training and in serving alike (recorded on
# every model version as mlcp.prompt_template).
PROMPT_TEMPLATE = "{prompt}\nanswer:"
STOP = ["\n"]


report = say("data")


def format_prompt(prompt: str, template: str = PROMPT_TEMPLATE) -> str:
    return template.replace("{prompt}", prompt)


# ------------------------------------------------------------------------ instructions


@dataclass(frozen=True)
class Sample:
    id: str
    split: str
    prompt: str
    response: str
    task: str = ""  # the record's "task", when it names one


@dataclass
class InstructionSet:
    samples: dict[str, list[Sample]]  # split -> samples, in file order

    def rows(self) -> int:
        return sum(len(v) for v in self.samples.values())


def _word_lists(seed: int, length: int) -> list[tuple[str, ...]]:
    """Distinct ordered word lists, in an order fixed by ``seed``: every triple shuffled (the
    default set), or as many longer lists as the splits need, drawn."""
    from .corpus import WORDS

    if length == 3:
        triples = list(itertools.permutations(WORDS, 3))
        random.Random(seed).shuffle(triples)
        return triples
    rng, found = random.Random(seed), {}
    while len(found) < sum(SIZES.values()):
        found[tuple(rng.sample(WORDS, length))] = None
    return list(found)


def build_instructions(seed: int = 0, variant: str = datasets.BASE_VARIANT) -> bytes:
    """The instructions as JSONL: disjoint train / val / eval word lists, fixed by ``seed``;
    the three tasks in turn over three words, or as ``variant`` (:data:`VARIANTS`) says."""
    if variant not in VARIANTS:
        raise BadInput(f"unknown LLM data variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    triples = _word_lists(seed, 5 if variant == "long-prompts" else 3)
    mix = random.Random(f"{seed}-{variant}")  # apart from the lists' draws
    answers = {"repeat": lambda w: w, "first": lambda w: w[:1], "last": lambda w: w[-1:]}
    lines = []
    start = 0
    for split in SPLITS:
        for index, words in enumerate(triples[start : start + SIZES[split]]):
            task = TASKS[index % len(TASKS)]
            if variant == "task-mix":
                task = "repeat" if mix.random() < 0.7 else TASKS[1 + index % 2]
            record = {
                "id": f"{split}-{index:04d}",
                "split": split,
                "task": task,
                "prompt": f"{task}: " + " ".join(words),
                "response": " ".join(answers[task](words)),
            }
            lines.append(json.dumps(record))
        start += SIZES[split]
    return ("\n".join(lines) + "\n").encode()


def parse(read: DataRead) -> InstructionSet:
    """Check and split a JSONL instruction file; BadInput names the first bad line."""
    try:
        text = read.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{read.uri} is not UTF-8 text: {exc}") from None
    samples: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{read.uri} line {number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise BadInput(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise BadInput(f"{where}: expected a JSON object, got {type(record).__name__}")
        for key in ("prompt", "response", "split"):
            if not isinstance(record.get(key), str):
                raise BadInput(f"{where}: {key!r} is missing or not a string")
        if not record["prompt"].strip():
            raise BadInput(f"{where}: 'prompt' is empty")
        if record["split"] not in SPLITS:
            raise BadInput(f"{where}: split {record['split']!r} is not one of {', '.join(SPLITS)}")
        sample_id = str(record.get("id", f"line-{number}"))
        samples[record["split"]].append(
            Sample(
                sample_id,
                record["split"],
                record["prompt"],
                record["response"],
                record["task"] if isinstance(record.get("task"), str) else "",
            )
        )
    empty = [split for split in SPLITS if not samples[split]]
    if empty:
        raise BadInput(f"{read.uri} has no {' / '.join(empty)} samples (see steps/llm/data.py)")
    return InstructionSet(samples)


def read(uri: str) -> tuple[DataRead, InstructionSet]:
    """Read and check an instruction file from ``s3://`` or a local path."""
    from ..records import lineage

    data = lineage.read(uri)
    return data, parse(data)


COLUMNS = {"id": "string", "split": "string", "prompt": "string", "response": "string"}


def log(read: DataRead, instructions: InstructionSet, context: str) -> str:
    """Record the instruction set as an input of the active run (``context``: training,
    evaluation); returns its digest."""
    from ..records import lineage

    return lineage.log(
        read, name="instructions", num_rows=instructions.rows(), columns=COLUMNS, context=context
    )


# ------------------------------------------------------------------------ the base model


def quiet_transformers() -> None:
    """No progress bars or advice from transformers in the commands' output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def train_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on the shipped corpus, as a transformers tokenizer."""
    quiet_transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .corpus import WORDS, sentences

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences(), trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    split = [w for w in WORDS if len(wrapped(" " + w)["input_ids"]) != 1]
    if split:  # the task's answers are judged word by word: each must be one token
        raise MlcpError(f"the tokenizer splits {', '.join(split)}: enlarge the corpus")
    return wrapped


def build_base_folder(
    folder: Path,
    name: str = BASE_NAME,
    *,
    hidden_size: int = 128,
    seed: int = 0,
    initializer_range: float = 0.1,
) -> Path:
    """Write a tiny random Llama and its tokenizer to ``folder`` with ``save_pretrained``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size < 64 or hidden_size % 64:
        raise BadInput(f"hidden size must be a multiple of 64 (head dim 64), got {hidden_size}")
    tokenizer = train_tokenizer()
    heads = hidden_size // 64
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=64,  # the CPU attention of vLLM rejects head_dim 16
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info = {"name": name, "hidden_size": hidden_size, "seed": seed, "made_by": "mlcp data llm"}
    (folder / BASE_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return folder


def tar_folder(folder: Path) -> bytes:
    """A reproducible tar of a folder: sorted names, no times, no owners."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(str(path.relative_to(folder)))
            info.size = path.stat().st_size
            info.mode = 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    return buf.getvalue()


def build_base(name: str = BASE_NAME, *, hidden_size: int = 128, seed: int = 0) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return tar_folder(
            build_base_folder(Path(tmp) / "base", name, hidden_size=hidden_size, seed=seed)
        )


@dataclass(frozen=True)
class BaseModel:
    """A base model made local: the folder transformers (and vLLM) load, and its identity."""

    ref: str  # what was asked for
    folder: Path
    name: str  # the name adapters record, and vLLM must serve it under
    read: DataRead  # source URI and digest, for lineage
    hidden_size: int
    # what was loaded: the hub commit of a name, or sha256:<digest> of a folder or .tar
    revision: str = ""


def cache_dir() -> Path:
    return MLCP_CACHE_DIR.get() or Path(tempfile.gettempdir()) / "mlcp-cache"


def extract(data: bytes, dest: Path) -> Path:
    """Unpack a base-model tar into ``dest`` (atomically; kept when already there)."""
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError, ValueError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BadInput(f"the base model archive is not a readable tar: {exc}") from None
    if not (staging / "config.json").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise BadInput("the base model archive holds no config.json at its top")
    try:
        staging.rename(dest)
    except OSError:  # another process put it there first
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _folder_read(folder: Path) -> DataRead:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return DataRead(uri=folder.resolve().as_uri(), data=b"", sha256=digest.hexdigest())


REVISION_FLAG = "--base-revision"


def materialize(
    ref: str, revision: str | None = None, *, allow_unpinned: bool = False
) -> BaseModel:
    """Make the base model ``ref`` a local folder: an ``s3://`` or local ``.tar`` (unpacked
    into the cache), a local folder, or a model name from the Hugging Face cache at
    ``revision`` (a commit; without one BadInput, before anything is fetched, unless
    ``allow_unpinned``). For a folder or ``.tar``, a ``revision`` is the digest its bytes must
    have (steps/spec/pinning.py)."""
    from ..records import lineage
    from ..spec import pinning

    ref = (ref or "").strip()
    revision = (revision or "").strip() or None
    if not ref:
        raise BadInput("no base model given (--base-model) and MLCP_DATA_ROOT is not set")
    local = Path(ref[7:] if ref.startswith("file://") else ref).expanduser()
    what = f"base model {ref}"
    by_name = False
    if ref.startswith("s3://") or (local.is_file()):
        read = lineage.read(ref)
        pinned = pinning.check_digest(revision, read.sha256, what=what, flag=REVISION_FLAG)
        folder = extract(read.data, cache_dir() / "base" / read.sha256[:16])
    elif local.is_dir():
        folder = local.resolve()
        read = _folder_read(folder)
        pinned = pinning.check_digest(revision, read.sha256, what=what, flag=REVISION_FLAG)
    elif ref.endswith(".tar") or ref.startswith(("file://", "/", ".")):
        raise BadInput(f"base model {ref} does not exist")
    else:
        by_name = True
        pinning.require_commit(
            ref, revision, allow_unpinned=allow_unpinned, what="base model", flag=REVISION_FLAG
        )
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(ref, revision=revision))
        except Exception as exc:
            at = f" at revision {revision}" if revision else ""
            raise BadInput(
                f"base model {ref!r}{at} is not a file, a folder, or a model the Hugging Face "
                f"cache holds ({type(exc).__name__}: {exc})"
            ) from None
        # the hub's cache keeps a snapshot per commit: its folder name is what was loaded
        pinned = folder.name if pinning.is_commit(folder.name) else (revision or "unknown")
        # lineage names the snapshot read (the cache's models--<org>--<name>/snapshots/<commit>
        # folder): a source MLflow resolves, and which says the name and the commit
        read = _folder_read(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"base model {ref}: no readable config.json ({exc})") from None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    if not isinstance(text.get("hidden_size"), int):
        raise BadInput(f"base model {ref}: config.json names no hidden_size")
    try:
        info = json.loads((folder / BASE_INFO_FILE).read_text())
        name = str(info["name"])
    except (OSError, ValueError, KeyError):
        name = ref if by_name else folder.name
    return BaseModel(ref, folder, name, read, int(text["hidden_size"]), pinned)


# ------------------------------------------------------------------------ publishing


def default_uri() -> str:
    root = MLCP_DATA_ROOT.raw
    return f"{root.rstrip('/')}/{DEFAULT_KEY}" if root else ""


def default_revision(base_model: str | None) -> str | None:
    """The revision of the base model setting: ``$MLCP_LLM_BASE_REVISION`` when the base itself
    comes from the environment (no ``--base-model``), else none."""
    if base_model:
        return None
    return MLCP_LLM_BASE_REVISION.get()


def default_base() -> str:
    """The base model setting: ``$MLCP_LLM_BASE_MODEL``, else the one ``mlcp data llm`` made."""
    explicit = MLCP_LLM_BASE_MODEL.get()
    if explicit:
        return explicit
    root = MLCP_DATA_ROOT.raw
    return f"{root.rstrip('/')}/{BASE_KEY}" if root else ""


def publish(
    prefix: str | None = None,
    seed: int = 0,
    *,
    variant: str = datasets.BASE_VARIANT,
    base_seed: int = 0,
    base: bool = True,
) -> dict[str, str]:
    """Build the instruction set (``variant``, split with ``seed``) and publish it as a
    version of ``llm/instructions`` under ``prefix`` (default: ``$MLCP_DATA_ROOT``), made the
    newest; and (``base``) the base model with ``base_seed``, at ``<prefix>/llm/base/...``."""
    from ..records import lineage

    root = datasets.data_root(prefix)
    version = datasets.version_name(variant, seed)
    pointer = datasets.publish(
        root, DATASET, version, FILE, build_instructions(seed, variant), variant=variant, seed=seed
    )
    report(f"wrote {pointer['uri']} ({VARIANTS[variant]}); newest: {version}")
    published = {"data": pointer["uri"], "version": version, "digest": pointer["digest"]}
    if base:
        report(f"making the base model {BASE_NAME} (tokenizer + random Llama, no download)")
        base_uri = lineage.write(f"{root}/{BASE_KEY}", build_base(BASE_NAME, seed=base_seed))
        report(f"wrote {base_uri}")
        published.update(base_model=base_uri, base_name=BASE_NAME)
    return published


def serving_base(home: Path, ref: str | None = None) -> BaseModel:
    """The base model a local vLLM serves (for ``mlcp stack up``): ``ref`` or
    ``$MLCP_LLM_BASE_MODEL`` made local when set; else the default base, built into
    ``<home>/vllm/base/<name>`` once. The build is deterministic: those are the same bytes
    ``mlcp data llm`` publishes (seed 0), so the stack can start vLLM before the data is
    published and the adapters trained on the published base fit it."""
    revision = default_revision(ref)
    ref = ref or MLCP_LLM_BASE_MODEL.get()
    if ref:
        return materialize(ref, revision)
    folder = Path(home) / "vllm" / "base" / BASE_NAME
    if not (folder / "config.json").is_file():
        report(f"making the base model {BASE_NAME} in {folder} (no download)")
        extract(build_base(BASE_NAME), folder)
    return materialize(str(folder))
