"""Rule files: hypothesis-generated ``when`` expressions, parsed by the rule grammar
(``rule-engine``) and evaluated on generated features, against a direct Python evaluation of
the same predicates; and every way a file is refused, with the rule and the column."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.risk.errors import RuleFileError
from streams.risk.limits import RULE_FILE_BYTES_MAX, RULES_MAX
from streams.risk.rules import Action, compile_when, load_rules, most_severe
from streams.risk.symbols import SYMBOLS, Kind

NUMBERS = sorted(n for n, k in SYMBOLS.items() if k is Kind.number)
STRINGS = sorted(n for n, k in SYMBOLS.items() if k is Kind.string)
BOOLEANS = sorted(n for n, k in SYMBOLS.items() if k is Kind.boolean)
WORDS = ["pay_in", "pay_out", "USD", "EUR", "card", "paypal", "card_4242", "acct-1", "u1", ""]
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip


@dataclass(frozen=True)
class Expr:
    text: str
    fn: Callable[[dict[str, Any]], bool]


decimals = st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False)


@st.composite
def atoms(draw: st.DrawFn) -> Expr:
    kind = draw(st.sampled_from(["number", "string", "in", "regex", "boolean"]))
    if kind == "number":
        name, op, c = (
            draw(st.sampled_from(NUMBERS)),
            draw(st.sampled_from(list(OPS))),
            draw(decimals),
        )
        return Expr(f"{name} {op} {c}", lambda f: OPS[op](f[name], c))
    if kind == "string":
        name, op, w = (
            draw(st.sampled_from(STRINGS)),
            draw(st.sampled_from(["==", "!="])),
            draw(st.sampled_from(WORDS)),
        )
        return Expr(f'{name} {op} "{w}"', lambda f: OPS[op](f[name], w))
    if kind == "in":
        name = draw(st.sampled_from(STRINGS))
        ws = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
        listed = ", ".join(f'"{w}"' for w in ws)
        return Expr(f"{name} in [{listed}]", lambda f: f[name] in ws)
    if kind == "regex":
        name = draw(st.sampled_from(STRINGS))
        pattern = draw(st.sampled_from(["card_", "pay_.*", "[A-Z]{3}", "acct-[0-9]+", "u"]))
        return Expr(f'{name} =~ "{pattern}"', lambda f: re.match(pattern, f[name]) is not None)
    name = draw(st.sampled_from(BOOLEANS))
    return Expr(name, lambda f: bool(f[name]))


def combine(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    def both(op: str, a: Expr, b: Expr) -> Expr:
        if op == "and":
            return Expr(f"({a.text}) and ({b.text})", lambda f: a.fn(f) and b.fn(f))
        return Expr(f"({a.text}) or ({b.text})", lambda f: a.fn(f) or b.fn(f))

    return st.one_of(
        st.builds(both, st.sampled_from(["and", "or"]), children, children),
        children.map(lambda a: Expr(f"not ({a.text})", lambda f: not a.fn(f))),
    )


expressions = st.recursive(atoms(), combine, max_leaves=8)


@st.composite
def features(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in NUMBERS:
        out[n] = draw(decimals)
    for n in STRINGS:
        out[n] = draw(st.sampled_from(WORDS))
    for n in BOOLEANS:
        out[n] = draw(st.booleans())
    return out


@settings(max_examples=400)
@given(expr=expressions, values=st.lists(features(), min_size=1, max_size=5))
def test_a_generated_rule_decides_as_python_does(expr: Expr, values: list[dict[str, Any]]) -> None:
    compiled = compile_when(expr.text, "generated")
    for f in values:
        assert bool(compiled.matches(f)) == expr.fn(f), (expr.text, f)


@settings(max_examples=100)
@given(exprs=st.lists(expressions, min_size=1, max_size=6), f=features(), actions=st.data())
def test_a_rule_file_matches_the_rules_python_matches(
    exprs: list[Expr], f: dict[str, Any], actions: st.DataObject
) -> None:
    chosen = [actions.draw(st.sampled_from(["allow", "review", "block"])) for _ in exprs]
    body = 'version = "gen"\n' + "".join(
        f'[[rule]]\nname = "r{i}"\ntrigger = ["pay_in"]\nwhen = {_toml(e.text)}\naction = "{a}"\nscore = {i}\n'
        for i, (e, a) in enumerate(zip(exprs, chosen, strict=True))
    )
    rs = load_rules(body)
    matched = [r.name for r in rs.for_type("pay_in") if r.matches(f)]
    assert matched == [f"r{i}" for i, e in enumerate(exprs) if e.fn(f)]
    want = most_severe([Action(a) for a, e in zip(chosen, exprs, strict=True) if e.fn(f)])
    assert most_severe([r.action for r in rs.rules if r.name in matched]) is want


def _toml(text: str) -> str:
    return "'''" + text + "'''"


def _one(when: str, **rule: str) -> str:
    fields = {
        "name": '"r"',
        "trigger": '["pay_in"]',
        "when": _toml(when),
        "action": '"block"',
        **rule,
    }
    return 'version = "v"\n[[rule]]\n' + "".join(f"{k} = {v}\n" for k, v in fields.items())


@pytest.mark.parametrize(
    ("text", "code", "rule", "column"),
    [
        (_one("amount > > 5"), "syntax_error", "r", 10),
        (
            _one("amount > 5 and\n  (user_payments_1h"),
            "syntax_error",
            "r",
            20,
        ),  # line 2, past its end
        (_one("amount > 5 and user_paymnts_1h > 2"), "unknown_symbol", "r", 16),
        (_one("amount"), "type_error", "r", None),
        (_one('amount > "x"'), "type_error", "r", None),
        (_one("$now > $today"), "nondeterministic", "r", 1),
        (_one("amount > 1", action='"maybe"'), "bad_rule", "r", None),
        (_one("amount > 1", trigger='["refund"]'), "bad_rule", "r", None),
        (_one("amount > 1", colour='"red"'), "unknown_key", "r", None),
        (_one("amount > 1", score="1.5"), "bad_value", "r", None),
        ('version = "v"\n[[rule]]\nname = "r"\n', "bad_rule", "r", None),
        ("version = 3\n", "bad_version", None, None),
        ("[[rule]\n", "not_toml", None, None),
        (b"version = '\xff'", "not_toml", None, None),
        ('version = "v"\n[thresholds]\nreview = 10\nblock = 5\n', "bad_value", None, None),
        ('version = "v"\nextra = 1\n', "unknown_key", None, None),
    ],
)
def test_bad_files_are_refused_with_the_rule_and_the_column(
    text: str | bytes, code: str, rule: str | None, column: int | None
) -> None:
    with pytest.raises(RuleFileError) as e:
        load_rules(text)
    assert (e.value.code, e.value.rule, e.value.column) == (code, rule, column), str(e.value)
    if rule is not None:
        assert f"rule {rule!r}" in str(e.value)
    if column is not None:
        assert f"column {column}" in str(e.value)


def test_huge_files_and_too_many_rules_are_refused() -> None:
    with pytest.raises(RuleFileError, match="bytes, more than") as e:
        load_rules('version = "v"\n' + "#" * RULE_FILE_BYTES_MAX)
    assert e.value.code == "too_large"
    many = 'version = "v"\n' + "".join(
        f'[[rule]]\nname = "r{i}"\ntrigger = ["pay_in"]\nwhen = "amount > 1"\naction = "allow"\n'
        for i in range(RULES_MAX + 1)
    )
    with pytest.raises(RuleFileError, match="rules, more than"):
        load_rules(many)
    with pytest.raises(RuleFileError, match="longer than"):
        load_rules(_one("amount > 1 and " * 200 + "amount > 1"))
    with pytest.raises(RuleFileError, match="a second rule"):
        load_rules(
            _one("amount > 1")
            + '[[rule]]\nname = "r"\ntrigger = ["pay_in"]\nwhen = "amount > 2"\naction = "allow"\n'
        )


def test_a_file_is_identified_by_its_bytes_and_keeps_its_settings() -> None:
    text = (
        _one("amount >= 100.50", score="25")
        + "[thresholds]\nreview = 20\nblock = 90\n[model]\nweight = 40\n"
    )
    a, b = load_rules(text), load_rules(text + "\n")
    assert a.sha256 != b.sha256 and a.rules[0].score == 25
    assert (a.review_threshold, a.block_threshold, a.model_weight) == (20, 90, 40)
    assert a.rules[0].matches({"amount": Decimal("100.50")})  # Decimal: exact, no float
    assert not a.rules[0].matches({"amount": Decimal("100.49")})
    snoozed = load_rules(_one("amount > 1", enabled="false"))
    assert snoozed.for_type("pay_in") == ()
