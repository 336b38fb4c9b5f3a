"""EventBridge event patterns, matched as EventBridge matches them, for the audit's stack check. Pure.

AWS's TestEventPattern would be the authority, but it is one call per rule and event and not every endpoint (moto)
has it; spotq's events need only the part of the pattern language operators use on them: value lists, `prefix`,
`suffix`, `equals-ignore-case`, `wildcard`, `anything-but`, `exists`, `numeric` and `$or`. A matcher this module
does not know (`cidr`, a future one) is taken as matching: the audit never cries wolf over syntax it cannot read.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable, Mapping
from typing import Any

JSON = dict[str, Any]

_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
    ">=": operator.ge,
    ">": operator.gt,
}


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether `event` matches `pattern`: every key of the pattern matches the event's field of that name."""
    for key, wanted in pattern.items():
        if key == "$or":
            if not any(matches(branch, event) for branch in wanted if isinstance(branch, Mapping)):
                return False
            continue
        present = key in event
        value = event.get(key)
        if isinstance(wanted, Mapping):
            if not isinstance(value, Mapping) or not matches(wanted, value):
                return False
            continue
        if not isinstance(wanted, list) or not _field_matches(wanted, present, value):
            return False
    return True


def narrowed(pattern: Mapping[str, Any], judged: Mapping[str, Any]) -> JSON:
    """`pattern` with only the keys `judged` has (recursively): the fields a sample event can speak for. The rest
    (instance IDs, group names, accounts) narrow which instances a rule covers, which the audit does not judge."""
    kept: JSON = {}
    for key, wanted in pattern.items():
        if key == "$or" and isinstance(wanted, list):
            branches = [narrowed(branch, judged) for branch in wanted if isinstance(branch, Mapping)]
            if all(branches):
                kept[key] = branches
        elif key in judged:
            inner = judged[key]
            if isinstance(wanted, Mapping) and isinstance(inner, Mapping):
                kept[key] = narrowed(wanted, inner)
            else:
                kept[key] = wanted
    return kept


def _field_matches(wanted: list[Any], present: bool, value: Any) -> bool:
    """A field's list of matchers: any one matching the value (or, for an array value, any of its elements)."""
    values = value if isinstance(value, list) else [value]
    for matcher in wanted:
        if isinstance(matcher, Mapping) and "exists" in matcher:
            if bool(matcher["exists"]) == present:
                return True
            continue
        if not present:
            continue
        if any(_one(matcher, each) for each in values):
            return True
    return False


def _one(matcher: Any, value: Any) -> bool:
    if not isinstance(matcher, Mapping):
        return bool(matcher == value) and isinstance(matcher, str) == isinstance(value, str)
    if "anything-but" in matcher:
        return not _excluded(matcher["anything-but"], value)
    if "numeric" in matcher:
        return _numeric(matcher["numeric"], value)
    return _string(matcher, value)


def _string(matcher: Mapping[str, Any], value: Any) -> bool:
    if not isinstance(value, str):
        return _unknown(matcher)
    if "prefix" in matcher:
        return _affix(matcher["prefix"], value, str.startswith)
    if "suffix" in matcher:
        return _affix(matcher["suffix"], value, str.endswith)
    if "equals-ignore-case" in matcher:
        return str(matcher["equals-ignore-case"]).casefold() == value.casefold()
    if "wildcard" in matcher:
        return _wildcard(str(matcher["wildcard"]), value)
    return _unknown(matcher)


def _affix(wanted: Any, value: str, test: Callable[[str, str], bool]) -> bool:
    if isinstance(wanted, Mapping) and "equals-ignore-case" in wanted:
        return test(value.casefold(), str(wanted["equals-ignore-case"]).casefold())
    return isinstance(wanted, str) and test(value, wanted)


def _wildcard(wanted: str, value: str) -> bool:
    """EventBridge's wildcard: `*` any run of characters, nothing else special."""
    escaped = "".join(f"[{c}]" if c in "?[]" else c for c in wanted)
    return fnmatch.fnmatchcase(value, escaped)


def _excluded(excluded: Any, value: Any) -> bool:
    """Whether `anything-but`'s operand names `value`."""
    if isinstance(excluded, list):
        return any(_one(each, value) for each in excluded)
    if isinstance(excluded, Mapping):
        return isinstance(value, str) and _string(excluded, value) and not _unknown(excluded)
    return _one(excluded, value)


def _numeric(spec: Any, value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not isinstance(spec, list):
        return False
    pairs = list(zip(spec[0::2], spec[1::2], strict=False))
    return all(op in _NUMERIC and isinstance(bound, (int, float)) and _NUMERIC[op](value, bound) for op, bound in pairs)


def _unknown(matcher: Mapping[str, Any]) -> bool:
    """A matcher this module cannot read: taken as matching (see the module's docstring)."""
    known = {"prefix", "suffix", "equals-ignore-case", "wildcard", "anything-but", "numeric", "exists"}
    return not (set(matcher) & known)
