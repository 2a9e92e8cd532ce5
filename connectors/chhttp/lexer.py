"""A lexer that agrees with ClickHouse's on where strings, quoted identifiers, heredocs and
comments end, so that a literal or a comment cannot smuggle a statement past the gate.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterator
from typing import NamedTuple


class Token(NamedTuple):
    kind: str  # "word" | "qid" (quoted identifier) | "str" | "punct" | "error"
    text: str
    start: int
    end: int
    depth: int  # round-bracket nesting of the token; a ")" has the depth of its "("


# Mirrors ClickHouse's Lexer: a backslash escapes anything and a doubled quote is a quote inside
# strings and quoted identifiers; `#` starts a comment only before a space or "!". Possessive
# quantifiers keep unterminated literals linear. Whitespace is folded into the next match to halve
# the Python-level iterations; "/", "$" and unterminated quotes are handled by hand.
_LEX_RE = re.compile(
    r"""
    [ \t\n\r\f\v]*+
    (?:
      (?P<skip>(?:--|//|\#[ !])[^\n]*+)
    | (?P<str>'(?:[^'\\]|\\.|'')*+')
    | (?P<qid>"(?:[^"\\]|\\.|"")*+"|`(?:[^`\\]|\\.|``)*+`)
    | (?P<word>[0-9A-Za-z_\x80-\U0010ffff][0-9A-Za-z_$\x80-\U0010ffff]*+)
    | (?P<punct>[^$/'"`])
    )
    """,
    re.VERBOSE | re.DOTALL,
)
_WHITESPACE_RE = re.compile(r"[ \t\n\r\f\v]*+")
_DOLLAR_WORD_RE = re.compile(r"\$[0-9A-Za-z_$]*+")
_BLOCK_RE = re.compile(r"/\*|\*/")


def _block_comment_end(sql: str, start: int) -> int:
    """End of the (nested, like ClickHouse's) block comment opening at start; -1 if unclosed."""
    level = 1
    for m in _BLOCK_RE.finditer(sql, start + 2):
        level += 1 if m.group() == "/*" else -1
        if level == 0:
            return m.end()
    return -1


class _Heredocs:
    """Finds where a heredoc ``$tag$...$tag$`` ends, as ClickHouse does, in O(log n).

    ClickHouse searches the rest of the query for the tag, which is quadratic in the number of
    unmatched tags. Any occurrence of a tag ``$x$`` (x without "$") spans two consecutive
    dollars, so indexing the text between consecutive dollars answers the same question.
    """

    def __init__(self, sql: str) -> None:
        self.dollars = [i for i, ch in enumerate(sql) if ch == "$"]
        self.at: dict[str, list[int]] = {}
        for a, b in itertools.pairwise(self.dollars):
            self.at.setdefault(sql[a : b + 1], []).append(a)

    def end(self, sql: str, start: int) -> int:
        """End of the heredoc opening at start (a "$"), or -1."""
        i = bisect.bisect_right(self.dollars, start)
        if i == len(self.dollars):
            return -1
        close = self.dollars[i]
        tag = sql[start : close + 1]
        places = self.at.get(tag, [])
        j = bisect.bisect_left(places, close + 1)
        return places[j] + len(tag) if j < len(places) else -1


def tokens(sql: str) -> Iterator[Token]:
    """Significant tokens of sql, lazily (so INSERT data after FORMAT is never scanned).

    Whitespace and comments are skipped. An unterminated literal or comment yields one
    "error" token and ends the stream.
    """
    pos, n, depth = 0, len(sql), 0
    heredocs: _Heredocs | None = None
    match = _LEX_RE.match
    while pos < n:
        m = match(sql, pos)
        if m is not None:
            kind = m.lastgroup or "punct"
            if kind == "skip":
                pos = m.end()
                continue
            start, pos = m.start(kind), m.end()
            text = m.group(kind)
            if text == ")":
                depth = max(0, depth - 1)
            yield Token(kind, text, start, pos, depth)
            if text == "(":
                depth += 1
            continue
        pos = _WHITESPACE_RE.match(sql, pos).end()  # type: ignore[union-attr]
        if pos >= n:
            return
        ch = sql[pos]
        if ch == "/":
            if sql.startswith("/*", pos):
                end = _block_comment_end(sql, pos)
                if end < 0:
                    yield Token("error", "multiline comment is not closed", pos, n, depth)
                    return
            else:
                end = pos + 1
                yield Token("punct", "/", pos, end, depth)
            pos = end
        elif ch == "$":
            heredocs = heredocs or _Heredocs(sql)
            end = heredocs.end(sql, pos)
            if end >= 0:
                yield Token("str", sql[pos:end], pos, end, depth)
            else:
                end = _DOLLAR_WORD_RE.match(sql, pos).end()  # type: ignore[union-attr]
                yield Token("word" if end - pos > 1 else "punct", sql[pos:end], pos, end, depth)
            pos = end
        else:  # an opening quote that never closes
            yield Token("error", f"quote {ch} is not closed", pos, n, depth)
            return


def unquote(tok: Token) -> str:
    return tok.text[1:-1] if tok.kind == "qid" else tok.text


def is_word(tok: Token | None, *words: str) -> bool:
    return tok is not None and tok.kind == "word" and tok.text.upper() in words


def second_statement(toks: list[Token]) -> bool:
    """True when a ";" is followed by anything but more ";": a second statement."""
    seen = False
    for t in toks:
        if t.kind == "punct" and t.text == ";":
            seen = True
        elif seen:
            return True
    return False
