"""``mlcp llm evaluate``: reads ``staged``, answers the eval split through vLLM's staged slot,
grades every answer with a judge, writes ``evaluated``.

The eval prompts go through the OpenAI-compatible API of the ``<model>-staged`` slot (the
path traffic takes), and through the bare base model as well, so the run shows what the
adapter adds. Every answer is graded ``correct`` / ``partial`` / ``wrong`` / ``refusal`` by the
judge (``reference`` by default, or any OpenAI-compatible endpoint), whose instructions are
a versioned prompt: the run carries its sha256. Logged: the rates of each grade for the
adapter and for the base, a per-sample table, and three gates: ``correct-rate`` (a minimum,
and no worse than the live version's recorded decision by more than ``max_regression``),
``refusal-rate`` (a maximum) and ``gain-over-base`` (the adapter's score minus the base's,
a minimum; score = correct + partial / 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import gates, tracking
from ..contract import EVALUATED, STAGED
from ..declare import Config, Stage, alias_option, option
from ..serving import vllm
from ..stage import Reporter, data_source, resolve_input
from . import PIPELINE, PROMPT_TEMPLATE_TAG
from . import data as llmdata
from . import judge as judges
from .deploy import require_staged

CORRECT_RATE = "correct-rate"
REFUSAL_RATE = "refusal-rate"
GAIN_OVER_BASE = "gain-over-base"
GATES = (CORRECT_RATE, REFUSAL_RATE, GAIN_OVER_BASE)


@dataclass(kw_only=True)
class EvaluateConfig(Config):
    input_alias: str = alias_option(STAGED, reads=True)
    output_alias: str = alias_option(EVALUATED, reads=False)
    data: str | None = option(
        None, help="instruction set URI (empty: the one the version was trained on)"
    )
    judge: str = option(
        "reference",
        help="judge back end: reference (deterministic rubric) or openai (an "
        "OpenAI-compatible endpoint)",
        choices=judges.KINDS,
        noun="judge",
    )
    judge_url: str | None = option(
        None,
        help="openai judge: base URL, e.g. http://judge:8000/v1 (empty: $MLCP_JUDGE_URL)",
    )
    judge_model: str | None = option(
        None, help="openai judge: model name (empty: $MLCP_JUDGE_MODEL)"
    )
    judge_constraint: str = option(
        "structured_outputs",
        help="openai judge: how its reply is held to the grades (guided_choice for older "
        "vLLM, none for endpoints without the option)",
        choices=judges.CONSTRAINTS,
    )
    min_correct: float = option(
        0.5, help="gate correct-rate: the lowest share of correct answers", min=0, max=1
    )
    max_regression: float = option(
        0.1,
        help="gate correct-rate: the largest drop allowed against the live version",
        min=0,
        max=1,
    )
    max_refusal: float = option(
        0.1, help="gate refusal-rate: the highest share of refusals", min=0, max=1
    )
    min_gain: float = option(
        0.2,
        help="gate gain-over-base: the lowest score gain over the bare base model",
        min=-1,
        max=1,
    )
    max_tokens: int = option(12, help="tokens per answer", min=1, max=256)
    limit: int = option(0, help="only the first N eval prompts (0: all)", min=0)
    vllm_url: str | None = vllm.url_option()


report = Reporter(PIPELINE, "evaluate")


def rates(grades: list[str], prefix: str = "") -> dict[str, float]:
    total = max(len(grades), 1)
    found = {f"{prefix}{g}_rate": grades.count(g) / total for g in judges.GRADES}
    found[f"{prefix}score"] = found[f"{prefix}correct_rate"] + found[f"{prefix}partial_rate"] / 2
    return found


def evaluate(cfg: EvaluateConfig) -> dict:
    import mlflow

    from .. import prompts

    judge = judges.make(
        cfg.judge, url=cfg.judge_url, model=cfg.judge_model, constraint=cfg.judge_constraint
    )
    server = vllm.VLLM(cfg.vllm_url)
    server.require_live()
    client, version, tags = resolve_input(cfg.model_name, cfg.input_alias)
    slot = require_staged(server, cfg.model_name, version, tags)
    read, instructions = llmdata.read(data_source(cfg.model_name, version, tags, cfg.data))
    samples = instructions.samples["eval"]
    if cfg.limit:
        samples = samples[: cfg.limit]
    template = tags.get(PROMPT_TEMPLATE_TAG, llmdata.PROMPT_TEMPLATE)
    base = server.base_model_info()
    name = tracking.run_name(cfg.model_name, {"v": version, "judge": judge.kind}, read.digest)
    params = {
        "input_alias": cfg.input_alias,
        "slot": slot,
        "base_model": base.name,
        "min_correct": cfg.min_correct,
        "max_regression": cfg.max_regression,
        "max_refusal": cfg.max_refusal,
        "min_gain": cfg.min_gain,
        "max_tokens": cfg.max_tokens,
        "samples": len(samples),
        **judge.describe(),
    }
    with report.stage_run(cfg.model_name, name, version=version, params=params):
        llmdata.log(read, instructions, "evaluation")
        prompt = prompts.use(judges.PROMPT_NAME, judges.INSTRUCTIONS)
        report(
            f"{len(samples)} eval prompts through {slot} v{version} and the base {base.name}; "
            f"judge {judge.kind} (prompt {prompt.name} sha256 {prompt.sha256[:12]})"
        )
        rows: dict[str, list] = {
            k: []
            for k in ("id", "prompt", "reference", "answer", "grade", "base_answer", "base_grade")
        }
        for index, sample in enumerate(samples, start=1):
            text = llmdata.format_prompt(sample.prompt, template)
            answer = server.complete(slot, text, cfg.max_tokens, stop=llmdata.STOP)
            base_answer = server.complete(base.name, text, cfg.max_tokens, stop=llmdata.STOP)
            for key, value in (
                ("id", sample.id),
                ("prompt", sample.prompt),
                ("reference", sample.response),
                ("answer", answer.strip()),
                ("grade", judge.grade(sample.prompt, sample.response, answer)),
                ("base_answer", base_answer.strip()),
                ("base_grade", judge.grade(sample.prompt, sample.response, base_answer)),
            ):
                rows[key].append(value)
            if index % 20 == 0 or index == len(samples):
                report(f"{index}/{len(samples)} answered and graded")
        metrics = {**rates(rows["grade"]), **rates(rows["base_grade"], "base_")}
        metrics["gain_over_base"] = metrics["score"] - metrics["base_score"]
        mlflow.log_metrics(metrics)
        mlflow.log_table(rows, "eval/results.json")
        mlflow.log_dict(
            {"metrics": metrics, "judge": judge.describe(), "prompt_sha256": prompt.sha256},
            "eval/summary.json",
        )
        evidence = {"samples": len(samples), **metrics}
        checks = [
            (
                gates.Gate(CORRECT_RATE, "correct_rate", ">=", cfg.min_correct, cfg.max_regression),
                metrics["correct_rate"],
            ),
            (
                gates.Gate(REFUSAL_RATE, "refusal_rate", "<=", cfg.max_refusal),
                metrics["refusal_rate"],
            ),
            (
                gates.Gate(GAIN_OVER_BASE, "gain_over_base", ">=", cfg.min_gain),
                metrics["gain_over_base"],
            ),
        ]
        report(
            f"v{version}: correct {metrics['correct_rate']:.2f}, partial "
            f"{metrics['partial_rate']:.2f}, wrong {metrics['wrong_rate']:.2f}, refusal "
            f"{metrics['refusal_rate']:.2f} (score {metrics['score']:.3f}); base "
            f"{base.name}: correct {metrics['base_correct_rate']:.2f} (score "
            f"{metrics['base_score']:.3f})"
        )
        report.judge(checks, model=cfg.model_name, version=version, evidence=evidence)
    report.advance(
        cfg.model_name,
        cfg.output_alias,
        version,
        reason=(
            f"correct {metrics['correct_rate']:.2f} vs base {metrics['base_correct_rate']:.2f} "
            f"on {len(samples)} eval prompts ({judge.kind} judge)"
        ),
        client=client,
    )
    return {
        "version": version,
        "correct_rate": metrics["correct_rate"],
        "score": metrics["score"],
        "base_correct_rate": metrics["base_correct_rate"],
        "base_score": metrics["base_score"],
        "gain_over_base": metrics["gain_over_base"],
        "judge": judge.kind,
        "judge_prompt_sha256": prompt.sha256,
        "data_digest": read.digest,
    }


STAGE = Stage(
    PIPELINE,
    "evaluate",
    "answer the eval set through vLLM; a judge grades it",
    EvaluateConfig,
    evaluate,
    GATES,
    title="LLM: judge the staged slot's answers (staged -> evaluated)",
    description=(
        "Answers the eval split through vLLM's <model>-staged slot and through the bare base; "
        "a judge (versioned prompt) grades every answer; the correct-rate (also against "
        "live), refusal-rate and gain-over-base gates decide output-alias (evaluated)."
    ),
)
