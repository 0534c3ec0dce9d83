"""The computer-vision pipeline: ResNet-18 trained on a versioned image set, served by Triton.

Stages (each reads one alias and writes the next): data -> train (candidate) -> deploy
(staged) -> evaluate (evaluated) -> perf-test (benchmarked); promote moves ``live`` and
reloads Triton's ``<model>-live`` slot.
"""

from ..spec.contract import TAG_PREFIX

PIPELINE = "cv"

# Tags this pipeline sets on its model versions (read by deploy, evaluate, perf-test and
# its serving back end).
ONNX_URI_TAG = TAG_PREFIX + "onnx_uri"
TRITON_BACKEND_TAG = TAG_PREFIX + "triton_backend"
IMAGE_SIZE_TAG = TAG_PREFIX + "image_size"
NUM_CLASSES_TAG = TAG_PREFIX + "num_classes"
