"""The computer-vision pipeline: ResNet-18 trained on a versioned image set, served by Triton.

Stages (each reads one alias and writes the next): data -> train (candidate) -> deploy
(staged) -> evaluate (evaluated) -> perf-test (benchmarked); promote moves ``live`` and
reloads Triton's ``<model>-live`` slot.
"""

PIPELINE = "cv"
