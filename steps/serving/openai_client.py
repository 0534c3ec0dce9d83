"""The standard ``openai`` client for any OpenAI-compatible endpoint (vLLM's server, an
external judge), and its errors mapped onto the exit-code convention.

``openai`` is imported inside the functions: a command that only loads adapters (promote,
rollback) never pays for it. Every call made through a client from here is traced by MLflow
when its openai autologging is on (steps/registry/traces.py).
"""

from __future__ import annotations

from ..base.errors import BadInput, MlcpError


def make(url: str, api_key: str | None, timeout: float):
    """A client of the endpoint at ``url`` (its base, without ``/v1``): no retries, so a
    failure is reported at once, and no proxy from the environment, so an HTTP(S)_PROXY
    meant for the internet does not route a server next door. Servers without keys
    ignore the placeholder key."""
    import openai

    return openai.OpenAI(
        base_url=f"{url}/v1",
        api_key=api_key or "none",
        timeout=timeout,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )


def call(method, name: str, url: str, *, unauthorized: str | None = None, **request):
    """``method(**request)`` (a method of an ``openai`` client). A request the server refused
    (4xx) is BadInput, anything else (5xx, unreachable, timed out) MlcpError, each naming
    ``name`` at ``url`` with the server's own message; a 401 adds ``unauthorized`` (which
    setting carries the key)."""
    import openai

    try:
        return method(**request)
    except openai.APIStatusError as exc:
        kind = BadInput if 400 <= exc.status_code < 500 else MlcpError
        detail = message(exc)
        if exc.status_code == 401 and unauthorized:
            detail = f"{detail} ({unauthorized})"
        raise kind(f"{name} at {url} answered HTTP {exc.status_code}: {detail}") from None
    except openai.APIConnectionError as exc:  # timeouts included
        raise MlcpError(f"{name} is not reachable at {url}: {exc.__cause__ or exc}") from None


def message(exc) -> str:
    """The server's own words in an error reply."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error)[:500]
        return str(body.get("message") or error)[:500]
    return str(exc.message)[:500]
