"""Secrets as files: how the steps read a credential, and where the cluster mounts them.

A secret setting ``NAME`` (a control key, an API key, a notification URL, a user's password)
is read from the variable ``NAME`` when it is set (the local stack's mode-600 environment
file, a person's shell), else from the file that ``NAME_FILE`` names (the convention of the
official PostgreSQL image's ``POSTGRES_PASSWORD_FILE``). In the cluster no Secret reaches a
container through its environment: the chart and the generated templates mount each Secret
as a read-only volume and set only the ``*_FILE`` paths, which are not secret. A file that
is not there (the Secret has no such key) means the setting is not given; one that cannot
be read is an error that names it.

Two credentials are read by libraries in their own file formats, mounted as such:

- MLflow's client (and steps/base/rest.py) read ``~/.mlflow/credentials`` (an ``[mlflow]``
  section with ``mlflow_tracking_username`` and ``mlflow_tracking_password``): the
  credentials Secret's key :data:`MLFLOW_CREDENTIALS_KEY`, mounted there (``HOME=/tmp``);
- every AWS client (boto3 in the steps and MLflow, the AWS SDK in Triton) reads the shared
  credentials file ``$AWS_SHARED_CREDENTIALS_FILE``: the key :data:`AWS_CREDENTIALS_KEY`.

Standard library only: ``workflows/`` derives the templates' volumes and paths from here.
"""

from __future__ import annotations

from pathlib import Path

from .environment import variable
from .errors import MlcpError

FILE_SUFFIX = "_FILE"
# Where a step pod mounts the credentials Secret (one file per key), read-only.
MOUNT = "/var/run/secrets/mlcp"
# The credentials Secret's keys holding a file in a library's own format.
AWS_CREDENTIALS_KEY = "aws-credentials"  # an AWS shared credentials file ([default] ...)
MLFLOW_CREDENTIALS_KEY = "mlflow-credentials"  # MLflow's credentials file ([mlflow] ...)
AWS_CREDENTIALS_ENV = "AWS_SHARED_CREDENTIALS_FILE"  # where AWS clients read that file
# MLflow's client reads its credentials file here, under the steps' HOME (/tmp); nothing
# else names the path.
MLFLOW_CREDENTIALS_DIR = ".mlflow"
MLFLOW_CREDENTIALS_FILE = "credentials"
# The secret settings the steps read (each from NAME, else NAME_FILE): the keys of the
# credentials Secret, which the templates point NAME_FILE at.
STEP_SECRETS = (
    "MLCP_TRITON_CONTROL_KEY",  # steps/serving/triton.py: Triton's model-control key
    "MLCP_VLLM_API_KEY",  # steps/serving/vllm.py: vLLM's API key
    "MLCP_JUDGE_API_KEY",  # steps/llm/judge.py: the LLM judge endpoint's key
    "MLCP_NOTIFY_URL",  # steps/stages/workflow_exit.py: where a failed workflow is reported
)


def file_variable(name: str) -> str:
    """``NAME_FILE``: the variable naming the file ``NAME`` is read from."""
    return name + FILE_SUFFIX


def read(name: str) -> str | None:
    """The secret setting ``name``: its variable when set, else the content of the file
    ``$NAME_FILE`` names (surrounding whitespace removed); None when neither gives one.
    MlcpError naming the variable and the path when the file exists but cannot be read."""
    value = variable(name).raw
    if value:
        return value
    path = variable(file_variable(name)).raw
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None  # the Secret holds no such key: the setting is not given
    except (OSError, UnicodeDecodeError) as exc:
        raise MlcpError(f"cannot read {name} from {path} (${file_variable(name)}): {exc}") from None
    return text.strip() or None


def source(name: str) -> str:
    """Where ``name`` was looked for, for a message: the variable, or the file too."""
    path = variable(file_variable(name)).raw
    return f"{name} (or the file {path}, ${file_variable(name)})" if path else name
