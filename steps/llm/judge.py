"""The judge that grades an answer: ``correct``, ``partial``, ``wrong`` or ``refusal``.

Its instructions (:data:`INSTRUCTIONS`) are a prompt, versioned through
:func:`steps.records.prompts.use` on every evaluation run (artifact, sha256 tag, prompt registry),
so a grade can always be traced to the exact rubric that produced it. Two back ends:

- ``reference`` (the default): deterministic, compares the answer with the reference answer
  following the same rubric;
- ``openai``: any OpenAI-compatible endpoint's chat completions, asked through the standard
  ``openai`` client (so MLflow's openai autologging traces each call), told the rubric as
  its system message, its output constrained to the four labels (vLLM's
  ``structured_outputs`` choice by default; ``guided_choice`` for older vLLM; ``none`` for
  endpoints without such an option). A reply that is not one of the labels is an error,
  never guessed at.
"""

from __future__ import annotations

import re

from ..base import secrets
from ..base.environment import MLCP_JUDGE_MODEL, MLCP_JUDGE_URL
from ..base.errors import BadInput, MlcpError
from ..serving import openai_client

GRADES = ("correct", "partial", "wrong", "refusal")
PROMPT_NAME = "llm-judge"
KINDS = ("reference", "openai")
CONSTRAINTS = ("structured_outputs", "guided_choice", "none")
REFUSALS = ("i do not know", "i don't know", "cannot", "can't", "sorry", "unable to")

INSTRUCTIONS = """You grade the answer of an assistant to one instruction.
You are given the instruction, the reference answer and the assistant's answer.
Reply with exactly one word, one of: correct, partial, wrong, refusal.
- correct: the answer says the same as the reference (case, spacing and final
  punctuation do not matter).
- partial: the answer holds part of the reference: the right words in another order, some
  of the words in their right places, or the whole reference with extra words.
- refusal: the answer is empty, or declines (says it does not know or cannot answer).
- wrong: anything else.
"""


def normalize(text: str) -> list[str]:
    words = re.sub(r"\s+", " ", (text or "").strip().lower()).strip(" .!?,;:").split()
    return [w.strip(".,;:!?\"'") for w in words if w.strip(".,;:!?\"'")]


def reference_grade(answer: str, reference: str) -> str:
    """The rubric of :data:`INSTRUCTIONS`, deterministically."""
    got, want = normalize(answer), normalize(reference)
    text = " ".join(got)
    if not got or any(marker in text for marker in REFUSALS):
        return "refusal"
    if got == want:
        return "correct"
    in_place = sum(1 for a, b in zip(got, want, strict=False) if a == b)
    contains = any(got[i : i + len(want)] == want for i in range(len(got) - len(want) + 1))
    if sorted(got) == sorted(want) or in_place > 0 or contains:
        return "partial"
    return "wrong"


def parse_grade(reply: str, where: str) -> str:
    grade = (reply or "").strip().strip(".\"'").lower()
    if grade not in GRADES:
        raise MlcpError(
            f"the judge at {where} replied {(reply or '')[:120]!r}, which is not a grade "
            f"(expected one of {', '.join(GRADES)}): is its output constrained to the labels?"
        )
    return grade


class ReferenceJudge:
    kind = "reference"
    instructions = INSTRUCTIONS  # the rubric it follows, versioned by each evaluation

    def describe(self) -> dict:
        return {"judge": self.kind}

    def source(self) -> str:
        """Who graded, as an assessment's source names it."""
        return self.kind

    def grade(self, instruction: str, reference: str, answer: str) -> str:
        return reference_grade(answer, reference)


class OpenAIJudge:
    """Grades through an OpenAI-compatible chat completions endpoint."""

    kind = "openai"

    def __init__(
        self,
        url: str,
        model: str,
        *,
        constraint: str = "structured_outputs",
        api_key: str | None = None,
        timeout: float = 60.0,
        instructions: str = INSTRUCTIONS,
    ):
        url = (url or "").strip().rstrip("/")
        if not url:
            raise BadInput("the openai judge needs --judge-url (or $MLCP_JUDGE_URL)")
        if not re.match(r"^https?://[^/\s]+", url):
            raise BadInput(f"--judge-url must be an http(s) URL, got {url!r}")
        if not model:
            raise BadInput(
                "the openai judge needs --judge-model (or $MLCP_JUDGE_MODEL): the name of the "
                "model the endpoint serves"
            )
        if constraint not in CONSTRAINTS:
            raise BadInput(f"--judge-constraint must be one of {', '.join(CONSTRAINTS)}")
        self.url = url[: -len("/v1")] if url.endswith("/v1") else url
        self.model = model
        self.constraint = constraint
        self.api_key = api_key
        self.timeout = timeout
        self.instructions = instructions  # its system message, versioned by each evaluation
        self._client = None  # the openai client, made on first use

    def describe(self) -> dict:
        return {
            "judge": self.kind,
            "judge_url": self.url,
            "judge_model": self.model,
            "judge_constraint": self.constraint,
        }

    def source(self) -> str:
        return f"{self.kind}:{self.model}"

    def _openai(self):
        if self._client is None:
            self._client = openai_client.make(self.url, self.api_key, self.timeout)
        return self._client

    def grade(self, instruction: str, reference: str, answer: str) -> str:
        extra: dict = {}
        if self.constraint == "structured_outputs":
            extra["structured_outputs"] = {"choice": list(GRADES)}
        elif self.constraint == "guided_choice":
            extra["guided_choice"] = list(GRADES)
        reply = openai_client.call(
            self._openai().chat.completions.create,
            "the judge",
            self.url,
            model=self.model,
            messages=[
                {"role": "system", "content": self.instructions},
                {"role": "user", "content": user_message(instruction, reference, answer)},
            ],
            temperature=0,
            max_tokens=16,  # room for the longest label in any tokenization
            extra_body=extra or None,
        )
        try:
            text = reply.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise MlcpError(
                f"the judge at {self.url} answered no chat completion: {str(reply)[:200]!r}"
            ) from None
        return parse_grade(text, f"{self.url} ({self.model})")


def user_message(instruction: str, reference: str, answer: str) -> str:
    """What the judge is shown of one answer."""
    return (
        f"Instruction: {instruction}\nReference answer: {reference}\n"
        f"Assistant's answer: {answer.strip()}\nGrade:"
    )


def make(
    kind: str,
    *,
    url: str | None = None,
    model: str | None = None,
    constraint: str = "structured_outputs",
):
    """The judge named ``kind``; the openai one's URL and model default to ``$MLCP_JUDGE_URL``
    and ``$MLCP_JUDGE_MODEL``, its key comes from ``$MLCP_JUDGE_API_KEY`` (never a flag)."""
    if kind == "reference":
        return ReferenceJudge()
    if kind == "openai":
        return OpenAIJudge(
            url or MLCP_JUDGE_URL.raw,
            model or MLCP_JUDGE_MODEL.raw,
            constraint=constraint,
            api_key=secrets.read("MLCP_JUDGE_API_KEY"),
        )
    raise BadInput(f"unknown judge {kind!r}; choose one of {', '.join(KINDS)}")
