"""The tabular pipeline: a scikit-learn classifier on a versioned table, served by MLServer.

A pipeline in a package of its own: it imports the public surface ``mlcp`` only, and
registers itself through entry points (pyproject.toml). Stages: data -> train (candidate) ->
deploy (staged) -> evaluate (evaluated) -> perf-test (benchmarked); the generic promote moves
``live`` and MLServer's ``<model>-live`` slot follows.
"""

from mlcp import contract

PIPELINE = "tabular"
SERVING = "mlserver"

# The version tag deploy writes: the model folder MLServer loads (runs:/<deploy run>/...).
MODEL_DIR_TAG = contract.TAG_PREFIX + "mlserver.model"
