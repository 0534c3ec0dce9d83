"""llm drift: reads ``live`` (the instructions its adapter was trained on) and the newest (or
given) instruction set, and writes ``drift-detected`` (at the live version) when they moved.

The LLM pipeline's drift statistics, over every sample of each set (all splits):

- ``task-chi2-p``: the task mix (each record's ``task``, else the prompt's word before its
  colon), a chi-square test of homogeneity of the task counts; drift when its p-value is
  below ``--task-alpha``;
- ``prompt-length-ks-p``: the prompt length in characters, a two-sample Kolmogorov-Smirnov
  test; drift when its p-value is below ``--length-alpha``;
- ``prompt-length-psi``: the population stability index of that length over the
  reference's deciles; drift when it is above ``--max-length-psi``.

The step itself is the core's :mod:`steps.stages.drift`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec.declare import Stage, option
from ..stages import drift
from . import PIPELINE, data


@dataclass(kw_only=True)
class LlmDriftConfig(drift.DriftConfig):
    task_alpha: float = option(
        0.01,
        help="drift when the chi-square test of the task mix has a p-value below this",
        above=0,
        below=1,
    )
    length_alpha: float = option(
        0.01,
        help="drift when the Kolmogorov-Smirnov test of the prompt length has a p-value below this",
        above=0,
        below=1,
    )
    max_length_psi: float = option(
        0.2,
        help="drift when the population stability index of the prompt length is above this",
        min=0,
    )


def samples(instructions: data.InstructionSet) -> list[data.Sample]:
    return [s for split in data.SPLITS for s in instructions.samples[split]]


def task_of(sample: data.Sample) -> str:
    """The sample's task: its record's ``task``, else the prompt's word before a colon."""
    if sample.task:
        return sample.task
    head, colon, _ = sample.prompt.partition(":")
    return head.strip() if colon and head.strip() else "(none)"


def tasks(instructions: data.InstructionSet) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sample in samples(instructions):
        counts[task_of(sample)] = counts.get(task_of(sample), 0) + 1
    return counts


def lengths(instructions: data.InstructionSet) -> list[float]:
    return [float(len(s.prompt)) for s in samples(instructions)]


def statistics(
    cfg: LlmDriftConfig, reference: data.InstructionSet, new: data.InstructionSet
) -> list[drift.Statistic]:
    return [
        drift.categorical("task", "task mix", tasks(reference), tasks(new), cfg.task_alpha),
        *drift.numeric(
            "prompt-length",
            "prompt length in characters",
            lengths(reference),
            lengths(new),
            cfg.length_alpha,
            max_psi=cfg.max_length_psi,
            unit="prompts",
        ),
    ]


CHECK = drift.DriftCheck(
    dataset=data.DATASET,
    read=lambda uri: data.read(uri),
    log=lambda read, instructions, context: data.log(read, instructions, context),
    statistics=statistics,
)


def run(cfg: LlmDriftConfig) -> dict:
    return drift.run(cfg, PIPELINE, CHECK)


STAGE = Stage(
    PIPELINE,
    drift.NAME,
    "compare the newest instruction set with the live version's; drift-detected and "
    "retrain=true when it moved",
    LlmDriftConfig,
    run,
    title="LLM: drift (new instructions? moved?)",
    description=(
        "Compares the instructions the live adapter was trained on with the newest published "
        "set (or data): no new data, new data without drift, or drift (task-mix chi-square, "
        "prompt-length KS and PSI). Records the decision; on drift points drift-detected at "
        "the live version. Outputs retrain=true|false and the data to train on."
    ),
)
