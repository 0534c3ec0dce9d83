"""Argo's evaluation of a ``when`` (of a step or of a custom metric), for the templates'
contract tests: substitute the ``{{...}}`` variables, then evaluate the text as a govaluate
expression in which every bare word is a string (Argo turns govaluate's variables into
strings before evaluating; ``shouldExecute`` in its controller).

Written here because no Python port of govaluate exists. Only what the templates can use is
supported: quoted strings, numbers, ``true``/``false``, bare words, ``== != < <= > >=``,
``&& || !`` and parentheses. Anything else (``-``, ``+``, a function) raises
:class:`WhenError`, as a template relying on it would be a bug here: a bare word with a
hyphen, for instance, is arithmetic to govaluate and fails in Argo.
"""

from __future__ import annotations

import re

VARIABLE = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'[^']*'|"[^"]*")
    | (?P<number>\d+(?:\.\d+)?(?![\w.]))
    | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()])
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)


class WhenError(ValueError):
    """What Argo would refuse: an unresolved variable, a token govaluate reads otherwise."""


def substitute(text: str, scope: dict[str, str]) -> str:
    """Replace every ``{{name}}`` with its value; an unknown name is an error."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in scope:
            raise WhenError(f"unresolved variable {{{{{name}}}}} in {text!r}")
        return scope[name]

    return VARIABLE.sub(value, text)


def tokens(text: str) -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if not match or match.end() == position:
            raise WhenError(f"govaluate reads {text[position:]!r} otherwise than as a string")
        position = match.end()
        if match.group("string") is not None:
            found.append(("value", match.group("string")[1:-1]))
        elif match.group("number") is not None:
            found.append(("value", float(match.group("number"))))
        elif match.group("op") is not None:
            found.append(("op", match.group("op")))
        else:
            word = match.group("word")
            found.append(("value", {"true": True, "false": False}.get(word, word)))
    return found


class _Parser:
    def __init__(self, items: list[tuple[str, object]]):
        self.items = items
        self.at = 0

    def peek(self) -> object:
        return self.items[self.at][1] if self.at < len(self.items) else None

    def take(self) -> tuple[str, object]:
        if self.at >= len(self.items):
            raise WhenError("the expression ends too early")
        item = self.items[self.at]
        self.at += 1
        return item

    def either(self) -> object:
        left = self.both()
        while self.peek() == "||":
            self.take()
            right = self.both()
            left = _truth(left) or _truth(right)
        return left

    def both(self) -> object:
        left = self.compare()
        while self.peek() == "&&":
            self.take()
            right = self.compare()
            left = _truth(left) and _truth(right)
        return left

    def compare(self) -> object:
        left = self.unary()
        op = self.peek()
        if op in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            right = self.unary()
            if op == "==":
                return left == right
            if op == "!=":
                return left != right
            if not (isinstance(left, float) and isinstance(right, float)):
                raise WhenError(f"{op} compares numbers, got {left!r} and {right!r}")
            return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[
                op
            ]
        return left

    def unary(self) -> object:
        if self.peek() == "!":
            self.take()
            return not _truth(self.unary())
        kind, item = self.take()
        if item == "(" and kind == "op":
            inner = self.either()
            if self.take() != ("op", ")"):
                raise WhenError("a parenthesis is not closed")
            return inner
        if kind != "value":
            raise WhenError(f"unexpected {item!r}")
        return item


def _truth(value: object) -> bool:
    if not isinstance(value, bool):
        raise WhenError(f"expected a boolean, got {value!r}")
    return value


def evaluate(when: str | None, scope: dict[str, str]) -> bool:
    """True when Argo would run the step or emit the metric (an empty ``when``: always)."""
    if not when:
        return True
    parser = _Parser(tokens(substitute(when, scope)))
    result = parser.either()
    if parser.at != len(parser.items):
        raise WhenError(f"unexpected {parser.items[parser.at][1]!r} in {when!r}")
    return _truth(result)


def emitted(metrics: list[dict], scope: dict[str, str]) -> list[tuple[str, dict, float]]:
    """The (name, labels, value) of every metric of a ``metrics.prometheus`` list that Argo
    would emit with ``scope``; a value that is not a number, or an empty label, is an error
    (Argo refuses to emit it)."""
    found = []
    for metric in metrics:
        if not evaluate(metric.get("when"), scope):
            continue
        labels = {
            label["key"]: substitute(label["value"], scope) for label in metric.get("labels", [])
        }
        empty = [key for key, value in labels.items() if not value]
        if empty:
            raise WhenError(f"{metric['name']}: empty label(s) {empty}")
        kind = next(k for k in ("counter", "gauge", "histogram") if k in metric)
        text = substitute(metric[kind]["value"], scope)
        try:
            value = float(text)
        except ValueError:
            raise WhenError(f"{metric['name']}: value {text!r} is not a number") from None
        found.append((metric["name"], labels, value))
    return found
