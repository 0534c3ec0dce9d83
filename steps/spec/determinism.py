"""Deterministic training: the same params, seed, data and code give the same model, bit for
bit on a CPU (what ``mlcp reproduce`` checks).

What a training stage sets before it builds its model (:func:`enable`):

- ``torch.use_deterministic_algorithms(True)``: an operation without a deterministic
  implementation fails on a CPU instead of silently varying (on a GPU it warns: a GPU run
  is held to "within tolerance", see ``steps/stages/reproduce.py``);
- on a GPU, ``CUBLAS_WORKSPACE_CONFIG`` (cuBLAS needs a fixed workspace for deterministic
  matrix products) and cuDNN without its timing-based algorithm search;
- a fixed number of CPU threads, :data:`CPU_THREADS`. The sums inside a convolution or a
  matrix product are split across the threads, and another split rounds differently: on the
  2-core development machine one epoch of the CV training with 1 thread and with 2 gave
  other losses and other test predictions, while two runs with 2 threads (also under heavy
  load) gave the same bits. So the count is a constant, not the machine's core count, and
  a training records it (param ``cpu_threads``) for its reproduction to use;
- the seeds are the stage's own: ``torch.manual_seed(seed)`` before the model is built
  (initialisation, dropout), and the data order drawn from a generator seeded with it.

Nothing heavy at import time (torch is imported by the functions).
"""

from __future__ import annotations

import os

from ..base.errors import BadInput
from .declare import option

# Intra-op threads of a CPU training. 2: what every training used on a machine with 2 or
# more cores before the count was fixed (so those versions reproduce), and a pod's usual
# CPU limit. Results depend on the count, not on the cores that run the threads.
CPU_THREADS = 2
THREADS_PARAM = "cpu_threads"  # the training run's param recording the count
CUBLAS_WORKSPACE = ":4096:8"

# OpenMP's idle threads sleep instead of spinning. By default each idle thread of a parallel
# region keeps a core busy for a while, waiting for the next region; on a machine whose cores
# are also serving (MLflow, Triton, vLLM) or running another step, the spinners take the cores
# the working threads need. Measured on the 2-core development machine under load, 4 epochs
# of the LLM training: 8.1 s passive against 171 s active, with the same losses bit for bit
# (the thread count, not the waiting, decides the sums). Read once, when the OpenMP runtime
# starts: `mlcp` sets it before anything imports torch, and every server the local stack
# starts inherits it. A value already set wins.
OMP_WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


def sleeping_threads(environ=os.environ) -> None:
    """Set :data:`OMP_WAIT_POLICY` in ``environ`` unless it is set already."""
    environ.setdefault(*OMP_WAIT_POLICY)


def enable(device: str, threads: int = CPU_THREADS) -> None:
    """Make this process's training deterministic on ``device`` (``cpu`` or ``cuda``)."""
    import torch

    if device == "cuda":
        # read when cuBLAS makes its handle (the first matrix product): set before that
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)


def recorded_threads(params: dict[str, str]) -> int:
    """The CPU threads a recorded training ran with (its ``cpu_threads`` param; before the
    param existed, the fixed count it used on any machine with 2 or more cores)."""
    try:
        return max(1, int(params.get(THREADS_PARAM, CPU_THREADS)))
    except ValueError:
        return CPU_THREADS


# ------------------------------------------------------------------ where a training runs

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is bad
    input (a pod scheduled without its GPU request should fail loudly, not train for hours)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: torch sees no GPU here (use --device auto or cpu)")
    return name


def device_option() -> str:
    return option(
        "auto",
        help="where to train: auto (the GPU when the pod has one, else the CPU), cpu or cuda",
        choices=DEVICES,
    )
