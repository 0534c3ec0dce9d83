"""``mlcp llm evaluate``: reads ``staged``, answers the eval split through vLLM's staged slot
and the champion's slot side by side, grades every answer with a judge, writes ``evaluated``.

The eval prompts go through the OpenAI-compatible API of the ``<model>-staged`` slot (the
challenger, on the path traffic takes), of the ``<model>-live`` slot (the champion: the
version ``--champion-alias``, ``live`` by default, names; the slot is checked to serve it)
and of the bare base model, so the run shows what the adapter adds and how it compares with
the champion on the same prompts. Every answer is graded ``correct`` / ``partial`` /
``wrong`` / ``refusal`` by the same judge (``reference`` by default, or any
OpenAI-compatible endpoint), whose instructions are a versioned prompt: the run carries its
sha256. Logged: the rates of each grade for the adapter, the champion and the base, a
per-sample table with the answers and grades side by side, and four gates:
``correct-rate`` (a minimum), ``correct-rate-vs-champion`` (non-inferiority: the lower end
of the paired 95% interval of the correct-rate difference, challenger minus champion, must
be >= -margin; McNemar's exact p-value recorded beside it; see steps/decisions/paired.py),
``refusal-rate`` (a maximum) and ``gain-over-base`` (the adapter's score minus the base's,
a minimum; score = correct + partial / 2). With no champion (the first version) only the
absolute gates apply, and the champion gate's decision says so.

Every completion (challenger, champion, base) and every judgement is an MLflow trace linked to
the run (steps/registry/traces.py): the completions through the ``openai`` client, traced by
MLflow's autologging under a span of their own; the reference judge as a span of its own, the openai
judge's call under it. Each carries the sample id, the slot, the version it served, the judge
prompt's sha256 and the grade as tags, and each answer its grade as an assessment, so
``mlcp traces MODEL@ALIAS --grade wrong`` (or the MLflow UI) finds every answer graded wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..decisions import gates, paired
from ..registry import traces
from ..serving import vllm
from ..spec.contract import (
    ANSWER_CALL,
    EVALUATED,
    GRADE_TAG,
    JUDGE_CALL,
    JUDGE_PROMPT_TAG,
    MODEL_TAG,
    NO_VERSION,
    SAMPLE_TAG,
    SLOT_TAG,
    STAGED,
    VERSION_TAG,
)
from ..spec.declare import Config, Stage, alias_option, option
from ..stages import runner
from ..stages.stage import Reporter
from . import PIPELINE, PROMPT_TEMPLATE_TAG
from . import data as llmdata
from . import judge as judges
from .deploy import require_slot, served_paths, unchanged

CORRECT_RATE = "correct-rate"
CORRECT_RATE_VS_CHAMPION = "correct-rate-vs-champion"
REFUSAL_RATE = "refusal-rate"
GAIN_OVER_BASE = "gain-over-base"
GATES = (CORRECT_RATE, CORRECT_RATE_VS_CHAMPION, REFUSAL_RATE, GAIN_OVER_BASE)


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
    champion_alias: str = paired.champion_option()
    # 0.1, six prompts in 60: two adapters of one recipe disagree on a handful of the 60
    # eval prompts, so the paired 95% interval of their difference spans about +-0.07 (seed 1
    # against seed 0: +0.033, [-0.017, +0.117]); 0.1 lets such a retrain through, while an
    # interval that reaches six prompts below the champion is refused.
    margin: float = option(
        0.1,
        help="gate correct-rate-vs-champion: the largest drop of the correct-rate below the "
        "champion's that the lower end of the paired 95% interval may show",
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


def slots(t: runner.Target) -> runner.Slots:
    """The staged slot and the champion's live slot, each checked to serve its version's
    adapter (what evaluate and perf-test measure)."""

    def check(slot: str, version: str, fix: str) -> None:
        tags = t.tags if version == t.version else t.client.get_model_version(t.model, version).tags
        require_slot(t.server, t.model, slot, version, dict(tags), fix=fix)

    return runner.check_slots(
        t,
        check,
        champion_alias=t.cfg.champion_alias,
        deploy_fix=f"run `mlcp llm deploy --model-name {t.model}` first",
    )


class Evaluate(runner.Evaluator):
    report = report
    data = llmdata

    def connect(self, t):
        cfg = t.cfg
        t.extra["judge"] = judges.make(
            cfg.judge, url=cfg.judge_url, model=cfg.judge_model, constraint=cfg.judge_constraint
        )
        server = vllm.VLLM(cfg.vllm_url)
        server.require_live()
        return server

    slots = staticmethod(slots)

    def prepare(self, t):
        samples = t.data.samples["eval"]
        t.extra["samples"] = samples[: t.cfg.limit] if t.cfg.limit else samples
        t.extra["base"] = t.server.base_model_info()

    def run_name(self, t):
        return {"v": t.version, "judge": t.extra["judge"].kind}

    def params(self, t):
        cfg = t.cfg
        return {
            "input_alias": cfg.input_alias,
            "slot": t.slot,
            "champion_alias": cfg.champion_alias,
            "champion_version": t.champion.version or "none",
            "champion_slot": t.champion_slot or "none",
            "base_model": t.extra["base"].name,
            "min_correct": cfg.min_correct,
            "margin": cfg.margin,
            "max_refusal": cfg.max_refusal,
            "min_gain": cfg.min_gain,
            "max_tokens": cfg.max_tokens,
            "samples": len(t.extra["samples"]),
            **t.extra["judge"].describe(),
        }

    def measure(self, t):
        import mlflow

        from ..records import prompts

        cfg, version, champion, server = t.cfg, t.version, t.champion, t.server
        judge, samples, base = t.extra["judge"], t.extra["samples"], t.extra["base"]
        slot, champion_slot = t.slot, t.champion_slot
        template = t.tags.get(PROMPT_TEMPLATE_TAG, llmdata.PROMPT_TEMPLATE)
        # who answers each prompt: the challenger, the champion (when there is one), the base
        sides = {"": slot, "base_": base.name}
        if champion_slot:
            sides = {"": slot, "champion_": champion_slot, "base_": base.name}
        measured = served_paths(server, (slot, champion_slot))
        prompt = prompts.use(judges.PROMPT_NAME, judge.instructions)
        against = (
            f"the champion {champion_slot} ({cfg.model_name}@{champion.alias} "
            f"v{champion.version}), "
            if champion_slot
            else f"{champion.missing}, "
        )
        report(
            f"{len(samples)} eval prompts through {slot} v{version}, {against}and the base "
            f"{base.name}; judge {judge.kind} (prompt {prompt.name} sha256 {prompt.sha256[:12]})"
        )
        rows: dict[str, list] = {
            k: []
            for k in (
                "id",
                "prompt",
                "reference",
                *(f"{side}{column}" for side in sides for column in ("answer", "grade")),
            )
        }
        # every answer and every judgement is a trace of this run (steps/registry/traces.py)
        traces.autolog()
        served_version = {"": version, "champion_": champion.version, "base_": NO_VERSION}
        graded: list[tuple[str, str]] = []  # (the answer's trace, its grade)
        for index, sample in enumerate(samples, start=1):
            text = llmdata.format_prompt(sample.prompt, template)
            rows["id"].append(sample.id)
            rows["prompt"].append(sample.prompt)
            rows["reference"].append(sample.response)
            for side, served in sides.items():
                tags = {
                    MODEL_TAG: cfg.model_name,
                    VERSION_TAG: served_version[side],
                    SAMPLE_TAG: sample.id,
                    SLOT_TAG: served,
                    JUDGE_PROMPT_TAG: prompt.sha256,
                }
                with traces.call(ANSWER_CALL, tags, {"model": served, "prompt": text}) as span:
                    answer = server.complete(served, text, cfg.max_tokens, stop=llmdata.STOP)
                    span.set_outputs(answer)
                asked = {
                    "instruction": sample.prompt,
                    "reference": sample.response,
                    "answer": answer,
                }
                with traces.call(JUDGE_CALL, tags, asked) as judged:
                    grade = judge.grade(sample.prompt, sample.response, answer)
                    judged.set_outputs(grade)
                    traces.tag_current({GRADE_TAG: grade})
                graded.append((span.trace_id, grade))
                rows[f"{side}answer"].append(answer.strip())
                rows[f"{side}grade"].append(grade)
            if index % 20 == 0 or index == len(samples):
                report(f"{index}/{len(samples)} answered and graded")
        unchanged(server, measured)
        traces.attach_grades(graded, judge=judge.source(), code=judge.kind == "reference")
        report(
            f"{2 * len(graded)} traces (an answer and its judgement each) in this run; list "
            f"them with `mlcp traces {cfg.model_name}@{cfg.input_alias}`"
        )
        metrics = {}
        for side in sides:
            metrics.update(rates(rows[f"{side}grade"], side))
        metrics["gain_over_base"] = metrics["score"] - metrics["base_score"]
        comparison: paired.Comparison | str | None = champion.missing
        if champion_slot:
            comparison = runner.compare(
                t,
                "correct_rate",
                [g == "correct" for g in rows["grade"]],
                [g == "correct" for g in rows["champion_grade"]],
            )
            metrics["correct_rate_difference"] = comparison.estimate
        mlflow.log_table(rows, "eval/results.json")
        mlflow.log_dict(
            {
                "metrics": metrics,
                "judge": judge.describe(),
                "prompt_sha256": prompt.sha256,
                "comparison": comparison.to_dict()
                if isinstance(comparison, paired.Comparison)
                else {"not_applicable": comparison},
            },
            "eval/summary.json",
        )
        champion_line = (
            f"; champion v{champion.version}: correct {metrics['champion_correct_rate']:.2f}"
            if champion_slot
            else ""
        )
        report(
            f"v{version}: correct {metrics['correct_rate']:.2f}, partial "
            f"{metrics['partial_rate']:.2f}, wrong {metrics['wrong_rate']:.2f}, refusal "
            f"{metrics['refusal_rate']:.2f} (score {metrics['score']:.3f}){champion_line}; base "
            f"{base.name}: correct {metrics['base_correct_rate']:.2f} (score "
            f"{metrics['base_score']:.3f})"
        )
        found = {
            "version": version,
            "correct_rate": metrics["correct_rate"],
            "score": metrics["score"],
            "base_correct_rate": metrics["base_correct_rate"],
            "base_score": metrics["base_score"],
            "gain_over_base": metrics["gain_over_base"],
            "champion_version": champion.version,
            "judge": judge.kind,
            "judge_prompt_sha256": prompt.sha256,
            "data_digest": t.read.digest,
        }
        if isinstance(comparison, paired.Comparison):
            found.update(
                champion_correct_rate=metrics["champion_correct_rate"],
                correct_rate_difference=comparison.estimate,
                correct_rate_difference_ci=[comparison.ci_low, comparison.ci_high],
                p_value=comparison.p_value,
            )
        versus = f", {comparison.line()}" if isinstance(comparison, paired.Comparison) else ""
        return runner.Measured(
            metrics=metrics,
            checks=[
                (
                    gates.Gate(CORRECT_RATE, "correct_rate", ">=", cfg.min_correct),
                    metrics["correct_rate"],
                ),
                runner.vs_champion(
                    CORRECT_RATE_VS_CHAMPION, "correct_rate", comparison, cfg.margin
                ),
                (
                    gates.Gate(REFUSAL_RATE, "refusal_rate", "<=", cfg.max_refusal),
                    metrics["refusal_rate"],
                ),
                (
                    gates.Gate(GAIN_OVER_BASE, "gain_over_base", ">=", cfg.min_gain),
                    metrics["gain_over_base"],
                ),
            ],
            evidence={"samples": len(samples), **metrics},
            reason=(
                f"correct {metrics['correct_rate']:.2f} vs base "
                f"{metrics['base_correct_rate']:.2f} on {len(samples)} eval prompts "
                f"({judge.kind} judge){versus}"
            ),
            result=found,
        )


STAGE = Stage(
    PIPELINE,
    "evaluate",
    "answer the eval set through vLLM beside the champion; a judge grades it",
    EvaluateConfig,
    Evaluate(),
    GATES,
    title="LLM: judge the staged slot's answers (staged -> evaluated)",
    description=(
        "Answers the eval split through vLLM's <model>-staged slot and through the bare base; "
        "the champion's <model>-live slot (the version champion-alias names) answers the same "
        "prompts; a judge (versioned prompt) grades every answer; the correct-rate, "
        "correct-rate-vs-champion (paired non-inferiority), refusal-rate and gain-over-base "
        "gates decide output-alias (evaluated)."
    ),
)
