"""The exit-code convention every ``mlcp`` command follows (and the Argo templates rely on).

- 0: success (including a recorded no-op);
- 2: bad input: unknown model or alias, a malformed value, a missing file;
  nothing was changed;
- 3: a quality gate said no; the version was tagged with the verdict, no alias moved;
- 1: anything else (a server that cannot be reached, a concurrent change, a bug).

Argo's ``retryStrategy`` retries only exit 1: bad input and a failed gate are final.
"""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3

# What each code means, for people reading a failed step's record (``mlcp record-exit``).
EXIT_MEANINGS = {
    EXIT_OK: "success",
    EXIT_ERROR: "an error: a server that cannot be reached, a concurrent change or a bug",
    EXIT_BAD_INPUT: "bad input: nothing was changed",
    EXIT_GATE_FAILED: "a quality gate or a promotion requirement said no",
}


class MlcpError(Exception):
    """Base of the errors the CLI turns into a one-line message and an exit code."""

    exit_code = EXIT_ERROR


class BadInput(MlcpError):
    """The caller asked for something that cannot be done as asked; nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class GateFailed(MlcpError):
    """A quality gate (or a promotion requirement built on gates) refused the version."""

    exit_code = EXIT_GATE_FAILED

    def __init__(self, message: str, version: str | int | None = None):
        super().__init__(message)
        self.version = None if version is None else str(version)  # the version refused


class ConcurrentChange(MlcpError):
    """An alias changed under us between reading and writing it; nothing was overwritten."""

    exit_code = EXIT_ERROR


class RecordFailed(MlcpError):
    """An audit record (decision or alias move) could not be written; the stage fails."""

    exit_code = EXIT_ERROR
