"""``mlcp``: the public surface a pipeline imports, and nothing more.

A pipeline of its own package (``examples/tabular``) imports from here only; the names below
are public and kept stable. Everything else under ``steps`` is private: it may change
without notice, and a test fails when an example or a tutorial imports it
(docs/reference/public-surface.md says which is which).

- the declarations: :func:`option`, :func:`alias_option`, :class:`Config`,
  :class:`DataConfig`, :class:`Stage`, :class:`Pipeline`, and the gates: :class:`Gate`,
  :func:`champion_check`;
- the stage reporter and its helpers: :class:`Reporter`, :func:`say`,
  :func:`resolve_input`, :func:`resolve_champion`, :func:`champion_slot_fix`,
  :func:`data_source`;
- the contract: the chain's aliases, the tag keys and slot names (:mod:`contract`);
- the errors: :class:`BadInput` (exit 2), :class:`MlcpError` (exit 1);
- the serving back-end protocol: :class:`ServingBackend`, :class:`Served`, :class:`Volume`,
  :class:`StackService`, :func:`each_address` (a headless Service's name as each replica
  behind it), and the serving environments' helpers (:mod:`envs`);
- data and lineage: :class:`DataRead`, :mod:`lineage`, :mod:`datasets`, and
  :func:`download` (an artifact through whichever client a step was given);
- what a training records: :mod:`tracking`, :mod:`describe`, :mod:`provenance`;
- what a comparing stage shares: :mod:`paired`, :mod:`perf` (the perf-test's load and
  closing), :mod:`drift` (the drift step and its shared statistics), and :mod:`reproduce`'s
  :class:`Request` and :func:`recorded_params`;
- the stage runner, which owns a stage's sequence (resolve the input alias, check the
  slots, read, record, judge the gates, write the output alias): :mod:`runner`.

Light at import time: standard library and the declarations only; each module named here
imports its heavy libraries inside its functions.
"""

from steps.base.errors import BadInput, MlcpError
from steps.base.rest import download
from steps.decisions import paired
from steps.decisions.gates import Gate, champion_check
from steps.records import datasets, lineage, provenance, tracking
from steps.records.lineage import DataRead
from steps.registry import describe
from steps.registry.backends import Served, ServingBackend, StackService, Volume, each_address
from steps.serving import envs
from steps.spec import contract
from steps.spec.declare import Config, DataConfig, Pipeline, Stage, alias_option, option
from steps.stages import drift, perf, runner
from steps.stages.reproduce import Request, recorded_params
from steps.stages.stage import (
    Champion,
    Reporter,
    champion_slot_fix,
    data_source,
    resolve_champion,
    resolve_input,
    say,
)

__all__ = [
    "BadInput",
    "Champion",
    "Config",
    "DataConfig",
    "DataRead",
    "Gate",
    "MlcpError",
    "Pipeline",
    "Reporter",
    "Request",
    "Served",
    "ServingBackend",
    "Stage",
    "StackService",
    "Volume",
    "alias_option",
    "champion_check",
    "champion_slot_fix",
    "contract",
    "data_source",
    "datasets",
    "describe",
    "each_address",
    "download",
    "drift",
    "envs",
    "lineage",
    "option",
    "paired",
    "perf",
    "provenance",
    "recorded_params",
    "runner",
    "resolve_champion",
    "resolve_input",
    "say",
    "tracking",
]
