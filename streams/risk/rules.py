"""Rule files: TOML, validated on load, each ``when`` parsed once to its AST (docs/risk.md).

``load_rules(text)`` is the one way in: it refuses (``RuleFileError``, naming the rule and
the column) a file that is too big, not TOML, has an unknown key, a bad action or trigger, a
``when`` that does not parse, names an unknown symbol, is not a true/false test, or asks for
the clock (``$now``, ``$today``: a decision must not depend on when it is replayed).
A loaded ``RuleSet`` is immutable; its identity is the SHA-256 of the file's bytes.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import rule_engine
import rule_engine.errors

from .errors import RuleFileError
from .limits import (
    MODEL_WEIGHT_MAX,
    NOTE_CHARS_MAX,
    RULE_FILE_BYTES_MAX,
    RULE_NAME_CHARS_MAX,
    RULES_MAX,
    SCORE_ABS_MAX,
    VERSION_CHARS_MAX,
    WHEN_CHARS_MAX,
)
from .symbols import SYMBOLS, TRIGGERS

RULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]*\Z")
_CLOCK = re.compile(r"\$\s*(now|today)\b")
_TOP_KEYS = frozenset({"version", "description", "thresholds", "model", "rule"})
_RULE_KEYS = frozenset({"name", "trigger", "when", "action", "score", "enabled", "description"})
_THRESHOLD_KEYS = frozenset({"review", "block"})
_MODEL_KEYS = frozenset({"weight"})


class Action(StrEnum):
    allow = "allow"
    review = "review"
    block = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.allow: 0, Action.review: 1, Action.block: 2}


def most_severe(actions: list[Action]) -> Action:
    return max(actions, key=lambda a: a.severity, default=Action.allow)


_CONTEXT = rule_engine.Context(
    type_resolver=rule_engine.type_resolver_from_dict(
        {name: getattr(rule_engine.DataType, kind.value) for name, kind in SYMBOLS.items()}
    )
)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    trigger: frozenset[str]
    when: str
    action: Action
    score: int
    enabled: bool = True
    description: str = ""
    # The parsed expression (its AST is ``compiled.statement``), made once per version.
    compiled: Any = field(default=None, compare=False, repr=False)

    def matches(self, features: Mapping[str, Any]) -> bool:
        return bool(self.compiled.matches(features))


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: str
    sha256: str
    rules: tuple[Rule, ...]
    review_threshold: int | None = None  # a total score at or above it means at least review
    block_threshold: int | None = None  # ... means block
    model_weight: int = 0  # points the model adds: model_weight x model_score
    description: str = ""

    def for_type(self, payment_type: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled and payment_type in r.trigger)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_rules(data: str | bytes) -> RuleSet:
    """Validate and compile a rule file; RuleFileError on anything wrong with it."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > RULE_FILE_BYTES_MAX:
        raise RuleFileError(
            f"the file is {len(raw)} bytes, more than {RULE_FILE_BYTES_MAX}", code="too_large"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleFileError(f"not UTF-8 text (byte {exc.start})", code="not_toml") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"not valid TOML: {exc}", code="not_toml") from None
    _only_keys(doc, _TOP_KEYS, "the file")
    version = doc.get("version")
    if not isinstance(version, str) or not VERSION.match(version):
        raise RuleFileError(
            'version must be a string of letters, digits and _.:+- (e.g. "2026-12-01")',
            code="bad_version",
        )
    if len(version) > VERSION_CHARS_MAX:
        raise RuleFileError(f"version is longer than {VERSION_CHARS_MAX}", code="bad_version")
    review_t, block_t = _thresholds(doc.get("thresholds", {}))
    weight = _model_weight(doc.get("model", {}))
    entries = doc.get("rule", [])
    if not isinstance(entries, list):
        raise RuleFileError("rule must be an array of tables ([[rule]])", code="bad_rule")
    if len(entries) > RULES_MAX:
        raise RuleFileError(f"{len(entries)} rules, more than {RULES_MAX}", code="too_large")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries, 1):
        rule = _rule(entry, i)
        if rule.name in seen:
            raise RuleFileError("a second rule with this name", rule.name, code="duplicate_rule")
        seen.add(rule.name)
        rules.append(rule)
    return RuleSet(
        version=version,
        sha256=sha256_of(raw),
        rules=tuple(rules),
        review_threshold=review_t,
        block_threshold=block_t,
        model_weight=weight,
        description=_text(doc.get("description", ""), "description", None),
    )


def _only_keys(
    table: Mapping[str, Any], allowed: frozenset[str], where: str, rule: str | None = None
) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise RuleFileError(
            f"unknown key {unknown[0]!r} in {where} (allowed: {', '.join(sorted(allowed))})",
            rule,
            code="unknown_key",
        )


def _int(v: Any, name: str, bound: int, rule: str | None = None) -> int:
    if type(v) is not int or not -bound <= v <= bound:
        raise RuleFileError(
            f"{name} must be an integer in -{bound}..{bound}", rule, code="bad_value"
        )
    return v


def _text(v: Any, name: str, rule: str | None) -> str:
    if not isinstance(v, str) or len(v) > NOTE_CHARS_MAX:
        raise RuleFileError(
            f"{name} must be a string of at most {NOTE_CHARS_MAX} characters",
            rule,
            code="bad_value",
        )
    return v


def _thresholds(t: Any) -> tuple[int | None, int | None]:
    if not isinstance(t, dict):
        raise RuleFileError("thresholds must be a table", code="bad_value")
    _only_keys(t, _THRESHOLD_KEYS, "[thresholds]")
    review = None if "review" not in t else _int(t["review"], "thresholds.review", SCORE_ABS_MAX)
    block = None if "block" not in t else _int(t["block"], "thresholds.block", SCORE_ABS_MAX)
    if review is not None and block is not None and block < review:
        raise RuleFileError(
            "thresholds.block must not be below thresholds.review", code="bad_value"
        )
    return review, block


def _model_weight(m: Any) -> int:
    if not isinstance(m, dict):
        raise RuleFileError("model must be a table", code="bad_value")
    _only_keys(m, _MODEL_KEYS, "[model]")
    weight = _int(m.get("weight", 0), "model.weight", MODEL_WEIGHT_MAX)
    if weight < 0:
        raise RuleFileError("model.weight must not be negative", code="bad_value")
    return weight


def _rule(entry: Any, i: int) -> Rule:
    if not isinstance(entry, dict):
        raise RuleFileError(f"rule {i} is not a table", code="bad_rule")
    name = entry.get("name")
    if not isinstance(name, str) or not RULE_NAME.match(name) or len(name) > RULE_NAME_CHARS_MAX:
        raise RuleFileError(
            f"rule {i}: name must match [A-Za-z_][A-Za-z0-9_.-]* (at most "
            f"{RULE_NAME_CHARS_MAX} characters)",
            code="bad_rule",
        )
    _only_keys(entry, _RULE_KEYS, f"rule {name!r}", name)
    trigger = entry.get("trigger")
    if isinstance(trigger, str):
        trigger = [trigger]
    if (
        not isinstance(trigger, list)
        or not trigger
        or not all(isinstance(t, str) and t in TRIGGERS for t in trigger)
    ):
        raise RuleFileError(
            f"trigger must be a non-empty list of {', '.join(sorted(TRIGGERS))}",
            name,
            code="bad_rule",
        )
    try:
        action = Action(str(entry.get("action")))
    except ValueError:
        raise RuleFileError(
            "action must be allow, review or block", name, code="bad_rule"
        ) from None
    enabled = entry.get("enabled", True)
    if type(enabled) is not bool:
        raise RuleFileError("enabled must be true or false", name, code="bad_rule")
    when = entry.get("when")
    if not isinstance(when, str) or not when.strip():
        raise RuleFileError("when must be a non-empty string", name, code="bad_rule")
    if len(when) > WHEN_CHARS_MAX:
        raise RuleFileError(
            f"when is longer than {WHEN_CHARS_MAX} characters", name, code="too_large"
        )
    return Rule(
        name=name,
        trigger=frozenset(trigger),
        when=when,
        action=action,
        score=_int(entry.get("score", 0), "score", SCORE_ABS_MAX, name),
        enabled=enabled,
        description=_text(entry.get("description", ""), "description", name),
        compiled=compile_when(when, name),
    )


def compile_when(when: str, name: str) -> Any:
    """Parse ``when`` to its AST with every symbol typed; RuleFileError names the column."""
    clock = _CLOCK.search(when)
    if clock:
        raise RuleFileError(
            f"${clock.group(1)} reads the clock: a decision must not depend on when it is made",
            name,
            _column(when, clock.start()),
            code="nondeterministic",
        )
    try:
        compiled = rule_engine.Rule(when, context=_CONTEXT)
    except rule_engine.errors.RuleSyntaxError as exc:
        token = getattr(exc, "token", None)
        pos = getattr(token, "lexpos", None)
        if pos is None:
            raise RuleFileError(
                "syntax error: the expression ends too early",
                name,
                _column(when, len(when)),
                code="syntax_error",
            ) from None
        raise RuleFileError(
            f"syntax error at {getattr(token, 'value', '?')!r}",
            name,
            _column(when, pos),
            code="syntax_error",
        ) from None
    except rule_engine.errors.SymbolResolutionError as exc:
        symbol = str(exc.symbol_name)
        m = re.search(rf"(?<![\w$.]){re.escape(symbol)}\b", when)
        raise RuleFileError(
            f"unknown symbol {symbol!r}",
            name,
            _column(when, m.start()) if m else None,
            code="unknown_symbol",
        ) from None
    except rule_engine.errors.RegexSyntaxError as exc:
        raise RuleFileError(
            f"bad regular expression: {exc.error}", name, code="syntax_error"
        ) from None
    except rule_engine.errors.EngineError as exc:
        raise RuleFileError(
            f"{type(exc).__name__}: {exc.message}", name, code="type_error"
        ) from None
    except (RecursionError, MemoryError):
        raise RuleFileError("the expression is nested too deeply", name, code="too_large") from None
    result = compiled.statement.expression.result_type
    if result is not rule_engine.DataType.BOOLEAN:
        raise RuleFileError(
            f"when must be a true/false test, not a {result.name.lower()}", name, code="type_error"
        )
    return compiled


def _column(text: str, pos: int) -> int:
    """1-based column of ``pos`` on its line."""
    return pos - (text.rfind("\n", 0, pos) + 1) + 1
