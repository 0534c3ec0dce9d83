"""Step code of the MLflow control plane: one module per stage plus the shared core.

Nothing here imports a heavy library at import time; each function imports what it needs,
so that ``mlcp --help`` and ``mlcp rollback`` start fast.
"""

__version__ = "0.1.0"
