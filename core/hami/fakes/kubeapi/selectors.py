"""Label and field selectors with kube-apiserver's grammar and matching rules.

Controllers depend on selector semantics (``!=`` and ``notin`` match objects *without* the label,
``in ()`` means the empty value, field values of absent fields are ``""``), so this follows
``k8s.io/apimachinery/pkg/labels`` and ``pkg/fields`` rather than approximating them.
Every syntax problem raises :class:`SelectorError`, which the server answers with 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "SelectorError",
    "parse_field_selector",
    "parse_label_selector",
]


class SelectorError(ValueError):
    """A selector string that kube-apiserver would reject."""


_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_label_key(key: str) -> None:
    """Qualified name: optional DNS-subdomain prefix, ``/``, and a 63-character name."""
    if not key:
        raise SelectorError("label key must be non-empty")
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN_RE.match(prefix)):
        raise SelectorError(f"invalid label key {key!r}: prefix part must be a DNS-1123 subdomain")
    if len(name) > 63 or not _NAME_RE.match(name):
        raise SelectorError(
            f"invalid label key {key!r}: name part must consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character (at most 63 characters)"
        )


def validate_label_value(value: str) -> None:
    if value and (len(value) > 63 or not _NAME_RE.match(value)):
        raise SelectorError(
            f"invalid label value {value!r}: must be 63 characters or less and must be empty or begin "
            "and end with an alphanumeric character with '-', '_', '.' or alphanumerics between"
        )


# ---------------------------------------------------------------- label selectors

OPS = ("exists", "!", "=", "==", "!=", "in", "notin", "gt", "lt")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # one of OPS
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "==", "in"):
            return present and labels[self.key] in self.values
        if self.op in ("!=", "notin"):
            return not present or labels[self.key] not in self.values
        # gt / lt compare integers; a label that is not an integer never matches
        if not present:
            return False
        try:
            have = int(labels[self.key])
        except ValueError:
            return False
        bound = int(self.values[0])
        return have > bound if self.op == "gt" else have < bound


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


_SPECIAL = "=!(),<>"


def _tokenize(text: str) -> list[tuple[str, str]]:
    """Tokens as ``(kind, literal)``: kinds are ``id``, ``in``, ``notin`` and the operators."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _SPECIAL:
            two = text[i : i + 2]
            if two in ("==", "!="):
                tokens.append((two, two))
                i += 2
            else:
                tokens.append((ch, ch))
                i += 1
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
            j += 1
        word = text[i:j]
        tokens.append((word if word in ("in", "notin") else "id", word))
        i = j
    tokens.append(("end", ""))
    return tokens


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def fail(self, why: str) -> SelectorError:
        return SelectorError(f"unable to parse requirement: {why} (selector {self.text!r})")

    def parse(self) -> LabelSelector:
        reqs: list[Requirement] = []
        if self.peek()[0] == "end":
            return LabelSelector(())
        while True:
            reqs.append(self.requirement())
            kind, lit = self.take()
            if kind == "end":
                break
            if kind != ",":
                raise self.fail(f"found {lit!r}, expected: ',' or end of string")
            if self.peek()[0] == "end":
                raise self.fail("found end of string, expected: identifier or '!'")
        return LabelSelector(tuple(reqs))

    def requirement(self) -> Requirement:
        kind, lit = self.take()
        if kind == "!":
            kind, key = self.take()
            if kind != "id":
                raise self.fail(f"found {key!r}, expected: identifier after '!'")
            validate_label_key(key)
            if self.peek()[0] not in (",", "end"):
                raise self.fail(f"found {self.peek()[1]!r}, expected: ',' or end of string after '!{key}'")
            return Requirement(key, "!")
        if kind != "id":
            raise self.fail(f"found {lit!r}, expected: identifier or '!'")
        key = lit
        validate_label_key(key)
        kind, lit = self.peek()
        if kind in (",", "end"):
            return Requirement(key, "exists")
        self.take()
        if kind in ("=", "==", "!="):
            nk, nl = self.peek()
            if nk in (",", "end"):
                value = ""
            elif nk == "id":
                self.take()
                value = nl
            else:
                raise self.fail(f"found {nl!r}, expected: identifier")
            validate_label_value(value)
            return Requirement(key, kind, (value,))
        if kind in ("<", ">"):
            nk, nl = self.take()
            if nk != "id":
                raise self.fail(f"found {nl!r}, expected: integer")
            try:
                int(nl)
            except ValueError:
                raise self.fail(f"for 'Gt', 'Lt' operators, the value must be an integer, got {nl!r}") from None
            return Requirement(key, "gt" if kind == ">" else "lt", (nl,))
        if kind in ("in", "notin"):
            values = self.value_set()
            for v in values:
                validate_label_value(v)
            return Requirement(key, kind, tuple(sorted(set(values))))
        raise self.fail(f"found {lit!r}, expected: in, notin, =, ==, !=, gt, lt")

    def value_set(self) -> list[str]:
        kind, lit = self.take()
        if kind != "(":
            raise self.fail(f"found {lit!r}, expected: '('")
        values: list[str] = []
        # kube's parser turns "()" into {""} and an empty slot between commas into ""
        expecting_value = True
        while True:
            kind, lit = self.take()
            if kind == "id":
                if not expecting_value:
                    raise self.fail(f"found {lit!r}, expected: ',' or ')'")
                values.append(lit)
                expecting_value = False
            elif kind == ",":
                if expecting_value:
                    values.append("")
                expecting_value = True
            elif kind == ")":
                if expecting_value:
                    values.append("")
                return values
            else:
                raise self.fail(f"found {lit!r}, expected: ',', ')' or identifier")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``labelSelector`` text; ``None`` and ``""`` select everything."""
    if not text:
        return LabelSelector(())
    return _LabelParser(text).parse()


# ---------------------------------------------------------------- field selectors


@dataclass(frozen=True)
class FieldTerm:
    field: str
    op: str  # "=" or "!="
    value: str


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[FieldTerm, ...] = ()

    def matches(self, fields: Callable[[str], str]) -> bool:
        for t in self.terms:
            have = fields(t.field)
            if (have == t.value) != (t.op == "="):
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.terms


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise SelectorError(f"invalid field selector value {value!r}: invalid escape sequence")
            out.append(value[i + 1])
            i += 2
            continue
        if ch in ",=":
            raise SelectorError(f"invalid field selector value {value!r}: unescaped {ch!r}")
        out.append(ch)
        i += 1
    return "".join(out)


def parse_field_selector(text: str | None, allowed: Callable[[str], bool] | None = None) -> FieldSelector:
    """Parse ``fieldSelector`` text (``a=b``, ``a==b``, ``a!=b``, comma-joined).

    ``allowed`` says which field names the resource supports; others are rejected
    like kube-apiserver does (``field label not supported``).
    """
    if not text:
        return FieldSelector(())
    terms: list[FieldTerm] = []
    for part in _split_unescaped(text, ","):
        split = _split_term(part)
        if split is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, raw = split
        if not field:
            raise SelectorError(f"invalid selector: '{text}'; empty field name in '{part}'")
        if allowed is not None and not allowed(field):
            raise SelectorError(f"field label not supported: {field}")
        terms.append(FieldTerm(field, "!=" if op == "!=" else "=", _unescape(raw)))
    return FieldSelector(tuple(terms))


def _split_term(term: str) -> tuple[str, str, str] | None:
    """Like apimachinery's splitTerm: the leftmost position holding ``!=``, ``==`` or ``=``."""
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """A field selector's view of ``obj``: dotted path, ``""`` when absent, booleans lower-case."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, (dict, list)):
        return ""
    return str(cur)
