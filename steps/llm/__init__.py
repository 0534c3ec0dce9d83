"""The LLM pipeline: a LoRA adapter trained with transformers + peft on a causal LM base,
served by vLLM with runtime adapter loading.

Stages (each reads one alias and writes the next): data -> train (candidate) -> deploy
(staged: vLLM slot ``<model>-staged``) -> evaluate (evaluated: a judge grades the answers)
-> perf-test (benchmarked: streaming completions under load); promote moves ``live`` and
reloads vLLM's ``<model>-live`` slot.
"""

PIPELINE = "llm"
