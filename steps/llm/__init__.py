"""The LLM pipeline: a LoRA adapter trained with transformers + peft on a causal LM base,
served by vLLM with runtime adapter loading.

Stages (each reads one alias and writes the next): data -> train (candidate) -> deploy
(staged: vLLM slot ``<model>-staged``) -> evaluate (evaluated: a judge grades the answers)
-> perf-test (benchmarked: streaming completions under load); promote moves ``live`` and
reloads vLLM's ``<model>-live`` slot.
"""

# The base model as a pinned input (steps/spec/pinning.py) and the tags the vLLM client's fit check
# reads are the contract's; named here too, for this pipeline's modules
from ..spec.contract import BASE_INPUT as BASE_INPUT
from ..spec.contract import BASE_MODEL_TAG as BASE_MODEL_TAG
from ..spec.contract import BASE_REVISION_TAG as BASE_REVISION_TAG
from ..spec.contract import HIDDEN_SIZE_TAG as HIDDEN_SIZE_TAG
from ..spec.contract import TAG_PREFIX

PIPELINE = "llm"

# Tags this pipeline sets on its model versions (read by deploy, evaluate, perf-test, its
# serving back end and the vLLM client's fit check).
ADAPTER_PATH_TAG = TAG_PREFIX + "adapter_path"
ADAPTER_URI_TAG = TAG_PREFIX + "adapter_uri"
SMOKE_PROMPT_TAG = TAG_PREFIX + "smoke_prompt"
PROMPT_TEMPLATE_TAG = TAG_PREFIX + "prompt_template"
BASE_MODEL_REF_TAG = TAG_PREFIX + "base_model_ref"  # what the training was given
BASE_MODEL_DIGEST_TAG = TAG_PREFIX + "base_model_digest"  # of the bytes it read
