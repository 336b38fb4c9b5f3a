"""Equality-based label selectors ('a=b,c==d,e!=f,g,!h'), evaluated locally against the node index."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from spotq.errors import ConfigError

_TERM = re.compile(
    r"^(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*))?$"
)


@dataclass(frozen=True)
class Term:
    key: str
    op: str  # "exists", "absent", "=", "!="
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "absent":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value


@dataclass(frozen=True)
class Selector:
    text: str
    terms: tuple[Term, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(term.matches(labels) for term in self.terms)


def parse(text: str, setting: str = "SPOTQ_KUBE__NODE_SELECTOR") -> Selector:
    terms: list[Term] = []
    for raw in filter(None, (part.strip() for part in text.split(","))):
        match = _TERM.match(raw)
        if not match or (match["neg"] and match["op"]):
            raise ConfigError(f"invalid setting {setting}: cannot read selector term {raw!r}")
        if match["op"]:
            terms.append(Term(match["key"], "!=" if match["op"] == "!=" else "=", match["value"]))
        else:
            terms.append(Term(match["key"], "absent" if match["neg"] else "exists"))
    return Selector(text, tuple(terms))
