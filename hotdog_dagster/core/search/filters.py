"""The filter language of search and the walk: parsed to a syntax tree, compiled to parameterised SQL.

A filter selects rows of a catalog relation (a DuckDB view) by its columns, e.g.::

    a_face:[0.58 TO 0.99] AND source:sketch
    (source:diffusion OR source:sketch) NOT is_blank:true
    width:>=512 prompt:"two hot dogs" -prompt:*burger*
    source:(sketch OR folder) +top_label:(face hamburger) -caption:(*night* *dark*)

Grammar (EBNF; keywords are case-insensitive, whitespace separates tokens)::

    filter     = or_expr ;
    or_expr    = and_expr , { ( "OR" | "||" ) , and_expr } ;
    and_expr   = seq , { ( "AND" | "&&" ) , seq } ;
    seq        = item , { item } ;                  (* juxtaposition: Lucene's default operator *)
    item       = [ "+" | "-" | "!" | "NOT" ] , unary ;
    unary      = ( "NOT" | "!" | "-" ) , unary | "+" , unary | primary ;
    primary    = "(" , or_expr , ")" | clause ;
    clause     = field , ":" , ( group | rhs ) ;
    group      = "(" , or_expr , ")" ;              (* inside, every primary is an rhs of the field *)
    rhs        = range | comparison | "*" | pattern | value ;
    range      = ( "[" | "{" ) , bound , "TO" , bound , ( "]" | "}" ) ;
    bound      = "*" | value ;
    comparison = ( ">=" | ">" | "<=" | "<" ) , value ;
    value      = quoted | bare ;
    pattern    = bare word holding an unescaped "*" or "?" ;
    quoted     = '"' , { char | "\\" , char } , '"' | "'" , { char | "\\" , char } , "'" ;
    bare       = { char - ( whitespace | "(" | ")" | "[" | "]" | "{" | "}" ) | "\\" , char } ;
    field      = a column of the relation, matched case-insensitively; "\\" escapes any character ;

Meaning:

- ``field:value`` is equality. Text is compared exactly (case-sensitive); numbers, booleans
  (``true``/``false``), dates and timestamps (ISO 8601) are converted to the column's type first.
- ``field:[a TO b]`` is an inclusive range, ``{a TO b}`` exclusive, ``[a TO b}`` / ``{a TO b]``
  mixed; ``*`` leaves an end open. ``field:>x``, ``>=``, ``<``, ``<=`` are shorthands for
  one-sided ranges. Ranges and comparisons need a numeric, date or timestamp column.
- ``field:*`` means "has a value" (IS NOT NULL); ``NOT field:*`` finds missing values. There is no
  ``null`` keyword, so ``source:null`` is the text "null".
- ``field:hot*`` is a wildcard (text columns only): ``*`` is any run of characters, ``?`` exactly
  one; case-sensitive, like equality. A quoted value is never a wildcard; in a bare value ``\\*``
  and ``\\?`` are literal. ``%`` and ``_`` are ordinary characters (escaped for SQL LIKE).
- Precedence is NOT > AND > OR; adjacent clauses are joined by AND (``a:1 b:2`` = ``a:1 AND b:2``),
  so ``a:1 OR b:2 c:3`` = ``a:1 OR (b:2 AND c:3)``. Parentheses group.
- ``+`` marks a required clause and ``-`` (or ``!``, ``NOT``) a prohibited one. Outside a field group
  adjacent clauses are all required anyway, so ``+a:1 -b:2`` = ``a:1 AND NOT b:2``.
- Field grouping (Lucene's ``field:(...)``): ``source:(sketch OR folder)`` applies the field to every
  value inside, which may be values, wildcards, ranges, comparisons, ``*`` and nested groups with
  AND, OR, NOT. Inside a group the default operator is OR, as in Lucene: adjacent plain values are
  alternatives, ``label:(face hamburger)`` = ``label:face OR label:hamburger`` (a field holds one
  value, so a list of values is a choice). ``+`` values are all required and ``-`` values all
  excluded: ``caption:(*red* *blue* -*circle*)`` = ``(caption:*red* OR caption:*blue*) AND NOT
  caption:*circle*``, and ``caption:(+*red* +*circle*)`` needs both. Unlike Lucene's scoring
  queries, plain values beside a ``+`` value still narrow the match (a filter has no score to
  boost). Adjacent values bind tighter than explicit AND and OR. In a group ``-`` before a value is
  "exclude", except right before a digit (``a_face:(-0.5 OR 0.5)`` holds the number -0.5).
- A clause on a missing (NULL) value is false, and NOT is the exact complement: every row matches
  either ``X`` or ``NOT X``, never both, never neither.
- A bare value runs to the next whitespace or bracket and may hold ``:`` (``path:/a/b:c.png``);
  quote values with spaces or brackets, and escape with a backslash inside quotes (``"say \\"hi\\""``).
  ``-``, ``+`` or ``!`` right after ``:`` belongs to the value (``a_face:-0.5``).
- Escaping: a backslash makes the next character literal in bare values and field names, as in
  Lucene: ``source_name:img\\(1\\).png``, ``prompt:two\\ dogs``, ``label:(\\-x \\AND)``,
  ``odd\\:name:1``. Quoting does the same for values.

Safety: user text never reaches SQL as text. Field names are checked against the relation's
columns and written as quoted identifiers taken from that known list; every value is a bound ``?``
parameter, converted to the column's type in Python. Every problem is a :class:`FilterError` that
names the position (a 0-based character offset, and a caret under the filter) and what was expected.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from dataclasses import dataclass
from dataclasses import field as _field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "And",
    "Exists",
    "FilterError",
    "Node",
    "Not",
    "Or",
    "Range",
    "Term",
    "columns_of",
    "compile_filter",
    "parse",
    "resolve_field",
    "to_sql",
]


class FilterError(ValueError):
    """A filter that cannot be parsed or applied; the one exception this module raises.

    ``message`` says what is wrong, ``position`` where (0-based character offset, or None when the
    problem has no single place), and ``text`` is the filter, when known, to draw a caret under.
    """

    def __init__(self, message: str, position: int | None = None, text: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.text = text

    def __str__(self) -> str:
        if self.position is None:
            return f"invalid filter: {self.message}"
        out = f"invalid filter at position {self.position}: {self.message}"
        if self.text is not None:
            # Tabs and newlines would push the caret off its column, so they are shown as spaces.
            shown = re.sub(r"\s", " ", self.text)
            out += f"\n  {shown}\n  {' ' * self.position}^"
        return out


# ----------------------------------------------------------------------------------------------
# Syntax tree
# ----------------------------------------------------------------------------------------------

# A value that can stay bare in printed filters; anything else is quoted.
_SAFE_BARE = re.compile(r"[^\s()\[\]{}\"'\\*?<>]+")
# Characters a printed wildcard pattern escapes with a backslash so the word stays one bare token.
_PATTERN_ESCAPE = set(" \t\r\n\f\v()[]{}\"'<>")
# Characters a printed field name escapes (they end a field word in the tokenizer).
_FIELD_ESCAPE = set("()[]{}:\"'\\")


def _format_value(value: str) -> str:
    """The value as filter text: bare when that reads back the same, else double-quoted."""
    if _SAFE_BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_field(name: str) -> str:
    """A field name as filter text: characters that would end or change the word are backslash-escaped."""
    out = []
    for i, ch in enumerate(name):
        special = ch.isspace() or ch in _FIELD_ESCAPE or (i == 0 and ch in "-!+")
        special = special or (ch in "&|" and name[i + 1 : i + 2] == ch)
        out.append("\\" + ch if special else ch)
    text = "".join(out)
    return "\\" + text if name.upper() in _KEYWORDS else text


def _format_pattern(pattern: str) -> str:
    """A canonical wildcard pattern as one bare word (its escapes kept, word-breaking chars escaped)."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        out.append("\\" + ch if ch in _PATTERN_ESCAPE or ch.isspace() else ch)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Term:
    """``field:value`` (op ``=``), ``field:>value`` etc., or a wildcard ``field:hot*`` (op ``like``).

    ``value`` is the text as written (converted to the column's type by :func:`to_sql`); for
    ``like`` it is a canonical glob: ``*`` and ``?`` are wildcards, ``\\*``, ``\\?``, ``\\\\`` literals.
    """

    field: str
    op: str
    value: str
    pos: int | None = _field(default=None, compare=False, repr=False)  # where the field name starts
    value_pos: int | None = _field(default=None, compare=False, repr=False)  # where the value starts

    def to_text(self) -> str:
        if self.op == "like":
            return f"{_format_field(self.field)}:{_format_pattern(self.value)}"
        prefix = "" if self.op == "=" else self.op
        return f"{_format_field(self.field)}:{prefix}{_format_value(self.value)}"


@dataclass(frozen=True)
class Range:
    """``field:[low TO high]``; a None end is open (``*``), each end inclusive or exclusive."""

    field: str
    low: str | None
    high: str | None
    low_inclusive: bool = True
    high_inclusive: bool = True
    pos: int | None = _field(default=None, compare=False, repr=False)
    low_pos: int | None = _field(default=None, compare=False, repr=False)
    high_pos: int | None = _field(default=None, compare=False, repr=False)

    def to_text(self) -> str:
        low = "*" if self.low is None else _format_value(self.low)
        high = "*" if self.high is None else _format_value(self.high)
        opener = "[" if self.low_inclusive else "{"
        closer = "]" if self.high_inclusive else "}"
        return f"{_format_field(self.field)}:{opener}{low} TO {high}{closer}"


@dataclass(frozen=True)
class Exists:
    """``field:*``: the field has a value (IS NOT NULL)."""

    field: str
    pos: int | None = _field(default=None, compare=False, repr=False)

    def to_text(self) -> str:
        return f"{_format_field(self.field)}:*"


@dataclass(frozen=True)
class Not:
    """``NOT child``: rows where the child is not true (a NULL comparison counts as not true)."""

    child: Node

    def to_text(self) -> str:
        return "NOT " + _wrap(self.child, (And, Or))


@dataclass(frozen=True)
class And:
    """All children hold. A chain ``a AND b AND c`` is one node; a parenthesised group stays a child."""

    children: tuple[Node, ...]

    def to_text(self) -> str:
        return " AND ".join(_wrap(child, (And, Or)) for child in self.children)


@dataclass(frozen=True)
class Or:
    """Any child holds."""

    children: tuple[Node, ...]

    def to_text(self) -> str:
        return " OR ".join(_wrap(child, (Or,)) for child in self.children)


Node = Term | Range | Exists | Not | And | Or


def _wrap(node: Node, group_types: tuple[type, ...]) -> str:
    """Print a child, parenthesised when it would otherwise regroup (so text re-parses to the same tree)."""
    text = node.to_text()
    return f"({text})" if isinstance(node, group_types) else text


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

# The parser asks for the next token in one of three modes, because the same character means
# different things in a clause position, a value position and an item of a field group ("-" is NOT
# before a clause but a minus sign in "a_face:-0.5"; ":" ends a field name but belongs to
# "path:/a:b"; inside "label:(face -x)" words are values and "-" excludes).
_EXPR, _VALUE, _GROUP = "expr", "value", "group"
_PUNCT = set("()[]{}:")
_VALUE_STOP = set("()[]{}")
_KEYWORDS = {"AND", "OR", "NOT"}


@dataclass(frozen=True)
class _Token:
    kind: str  # "(" ")" "[" "]" "{" "}" ":" AND OR NOT PLUS CMP WORD QUOTED STAR PATTERN EOF
    text: str  # keyword/operator, unescaped value, or canonical glob for PATTERN
    pos: int
    end: int


def _describe(tok: _Token, source: str) -> str:
    """How an error message names the token it found."""
    if tok.kind == "EOF":
        return "end of filter"
    raw = source[tok.pos : tok.end]
    return repr(raw if len(raw) <= 30 else raw[:27] + "...")


def _operator(text: str, pos: int) -> _Token | None:
    """``&&``, ``||``, ``!``, ``-`` and ``+`` where a clause or a group item may start."""
    two = text[pos : pos + 2]
    if two == "&&":
        return _Token("AND", "AND", pos, pos + 2)
    if two == "||":
        return _Token("OR", "OR", pos, pos + 2)
    if text[pos] in "-!":
        return _Token("NOT", "NOT", pos, pos + 1)
    if text[pos] == "+":
        return _Token("PLUS", "+", pos, pos + 1)
    return None


def _next_token(text: str, pos: int, mode: str) -> _Token:
    """The token starting at or after ``pos`` (whitespace skipped), read in ``mode``."""
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    if pos >= n:
        return _Token("EOF", "", n, n)
    ch = text[pos]
    two = text[pos : pos + 2]
    if ch in "\"'":
        return _read_quoted(text, pos)
    if mode in (_VALUE, _GROUP):
        if two in (">=", "<="):
            return _Token("CMP", two, pos, pos + 2)
        if ch in "<>":
            return _Token("CMP", ch, pos, pos + 1)
        if ch in _VALUE_STOP:
            return _Token(ch, ch, pos, pos + 1)
        if mode == _GROUP:
            # "-5" and "-0.5" are numbers; "-2023-12-31" or "-x" excludes the value that follows.
            negative_number = ch == "-" and re.match(
                r"-(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?(?=$|[\s()\[\]{}])", text[pos:]
            )
            op = None if negative_number else _operator(text, pos)
            if op is not None:
                return op
            tok = _read_bare(text, pos)
            if tok.kind == "WORD" and text[tok.pos : tok.end].upper() in _KEYWORDS:
                return _Token(tok.text.upper(), tok.text.upper(), tok.pos, tok.end)
            return tok
        return _read_bare(text, pos)
    if ch in _PUNCT:
        return _Token(ch, ch, pos, pos + 1)
    op = _operator(text, pos)
    if op is not None:
        return op
    return _read_field_word(text, pos)


def _read_field_word(text: str, start: int) -> _Token:
    """A word in clause position (a field name or a keyword); a backslash escapes the next character."""
    out: list[str] = []
    i = start
    while i < len(text) and not text[i].isspace() and text[i] not in _PUNCT and text[i] not in "\"'":
        if text[i] == "\\":
            if i + 1 >= len(text):
                raise FilterError("expected a character after the escaping backslash", i + 1)
            out.append(text[i + 1])
            i += 2
            continue
        out.append(text[i])
        i += 1
    raw, word = text[start:i], "".join(out)
    if raw.upper() in _KEYWORDS:
        return _Token(raw.upper(), raw.upper(), start, i)
    return _Token("WORD", word, start, i)


def _read_quoted(text: str, start: int) -> _Token:
    """A quoted value; backslash escapes the next character. Never a wildcard, never ``*``."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == quote:
            return _Token("QUOTED", "".join(out), start, i + 1)
        else:
            out.append(ch)
            i += 1
    raise FilterError(f"unterminated quoted value: expected a closing {quote} for the {quote} here", start)


def _read_bare(text: str, start: int) -> _Token:
    """A bare value up to whitespace or a bracket: STAR (``*`` alone), PATTERN (wildcards) or WORD."""
    literal: list[str] = []  # the value with escapes resolved
    glob: list[str] = []  # the canonical wildcard pattern
    wild = False
    i = start
    while i < len(text) and not text[i].isspace() and text[i] not in _VALUE_STOP:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                raise FilterError("expected a character after the escaping backslash", i + 1)
            escaped = text[i + 1]
            literal.append(escaped)
            glob.append("\\" + escaped if escaped in "*?\\" else escaped)
            i += 2
            continue
        if ch in "*?":
            wild = True
        literal.append(ch)
        glob.append(ch)
        i += 1
    raw = text[start:i]
    if raw == "*":
        return _Token("STAR", "*", start, i)
    if wild:
        return _Token("PATTERN", "".join(glob), start, i)
    return _Token("WORD", "".join(literal), start, i)


# ----------------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over :func:`_next_token`, one method per grammar rule.

    ``field`` is None at the top level and the field's name token inside a field group, where
    every primary is a right-hand side of that field and adjacent items combine as Lucene's
    default operator OR does.
    """

    _TOP_STARTS = frozenset({"WORD", "NOT", "PLUS", "("})
    _GROUP_STARTS = frozenset({"WORD", "QUOTED", "PATTERN", "STAR", "CMP", "NOT", "PLUS", "(", "[", "{"})

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def deeper(self, tok: _Token) -> None:
        """One more level of parentheses, NOT or a prefix; too many is a FilterError, not a RecursionError.

        The parser is recursive, so ``((((...`` or ``NOT NOT NOT ...`` a few hundred deep used to
        exhaust Python's stack and escape as RecursionError (found by the reliability fuzzing).
        """
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(
                f"the filter nests more than {MAX_DEPTH} levels deep (parentheses, NOT, + and -); simplify it",
                tok.pos,
            )

    def peek(self, mode: str = _EXPR) -> _Token:
        return _next_token(self.text, self.pos, mode)

    def take(self, tok: _Token) -> _Token:
        self.pos = tok.end
        return tok

    def fail(self, expected: str, tok: _Token) -> FilterError:
        return FilterError(f"expected {expected}, found {_describe(tok, self.text)}", tok.pos)

    @staticmethod
    def mode(field: _Token | None) -> str:
        return _EXPR if field is None else _GROUP

    def parse(self) -> Node:
        if not self.text.strip():
            raise FilterError("the filter is empty; expected a clause such as field:value")
        node = self.or_expr(None)
        tok = self.peek()
        if tok.kind == ")":
            raise FilterError("unbalanced ')': there is no '(' for it to close", tok.pos)
        if tok.kind != "EOF":
            raise self.fail("AND, OR, NOT, a clause (field:value) or the end of the filter", tok)
        return node

    def or_expr(self, field: _Token | None) -> Node:
        children = [self.and_expr(field)]
        while self.peek(self.mode(field)).kind == "OR":
            self.take(self.peek(self.mode(field)))
            children.append(self.and_expr(field))
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_expr(self, field: _Token | None) -> Node:
        children = self.seq(field)
        while (tok := self.peek(self.mode(field))).kind == "AND":
            self.take(tok)
            children += self.seq(field)
        return children[0] if len(children) == 1 else And(tuple(children))

    def seq(self, field: _Token | None) -> list[Node]:
        """Adjacent items, as the members of an AND: required and prohibited items, and the plain ones.

        At the top level plain items are required (the default operator is AND); in a field group
        they are alternatives, so they become one OR member where the first of them stood.
        """
        starts = self._TOP_STARTS if field is None else self._GROUP_STARTS
        members: list[Node | None] = []
        plain: list[Node] = []
        while True:
            occur, node = self.item(field)
            if occur == "not":
                members.append(Not(node))
            elif occur == "plain" and field is not None:
                if not plain:
                    members.append(None)  # where the alternatives go
                plain.append(node)
            else:
                members.append(node)
            if self.peek(self.mode(field)).kind not in starts:
                break
        alternatives = plain[0] if len(plain) == 1 else Or(tuple(plain))
        return [alternatives if m is None else m for m in members]

    def item(self, field: _Token | None) -> tuple[str, Node]:
        tok = self.peek(self.mode(field))
        if tok.kind == "PLUS":
            self.take(tok)
            return "required", self.unary(field)
        if tok.kind == "NOT":
            self.take(tok)
            return "not", self.unary(field)
        return "plain", self.unary(field)

    def unary(self, field: _Token | None) -> Node:
        tok = self.peek(self.mode(field))
        if tok.kind in ("NOT", "PLUS"):
            self.take(tok)
            self.deeper(tok)
            try:
                child = self.unary(field)
            finally:
                self.depth -= 1
            # PLUS: required is what a clause is anyway once it stands alone
            return Not(child) if tok.kind == "NOT" else child
        return self.primary(field)

    def primary(self, field: _Token | None) -> Node:
        tok = self.peek(self.mode(field))
        if tok.kind == "(":
            self.take(tok)
            self.deeper(tok)
            try:
                node = self.or_expr(field)
            finally:
                self.depth -= 1
            close = self.peek(self.mode(field))
            if close.kind != ")":
                raise self.fail(f"')' to close the '(' at position {tok.pos}", close)
            self.take(close)
            return node
        if field is not None:
            return self.rhs(field, tok, in_group=True)
        if tok.kind == "WORD":
            return self.clause()
        raise self.fail("a clause (field:value), NOT or '('", tok)

    def clause(self) -> Node:
        name = self.take(self.peek())
        colon = self.peek()
        if colon.kind != ":":
            raise self.fail(f"':' after the field name {name.text!r} (clauses are field:value)", colon)
        self.take(colon)
        tok = self.peek(_VALUE)
        if tok.kind == "(":
            self.take(tok)
            self.deeper(tok)
            try:
                node = self.or_expr(name)
            finally:
                self.depth -= 1
            close = self.peek(_GROUP)
            if close.kind != ")":
                raise self.fail(f"')' to close the group of {name.text!r} opened at position {tok.pos}", close)
            self.take(close)
            return node
        return self.rhs(name, tok, in_group=False)

    def rhs(self, name: _Token, tok: _Token, in_group: bool) -> Node:
        """What follows ``field:`` (or stands for the field inside its group), starting at ``tok``."""
        if tok.kind in ("[", "{"):
            return self.range(name)
        if tok.kind == "CMP":
            self.take(tok)
            value = self.peek(_VALUE)
            if value.kind not in ("WORD", "QUOTED"):
                raise self.fail(f"a value after '{tok.text}'", value)
            self.take(value)
            return Term(name.text, tok.text, value.text, pos=name.pos, value_pos=value.pos)
        if tok.kind == "STAR":
            self.take(tok)
            return Exists(name.text, pos=name.pos)
        if tok.kind == "PATTERN":
            self.take(tok)
            return Term(name.text, "like", tok.text, pos=name.pos, value_pos=tok.pos)
        if tok.kind in ("WORD", "QUOTED"):
            self.take(tok)
            return Term(name.text, "=", tok.text, pos=name.pos, value_pos=tok.pos)
        if in_group:
            raise self.fail(
                f"a value, '*', a range [a TO b], a comparison (>, >=, <, <=) or '(' in the group of {name.text!r}",
                tok,
            )
        raise self.fail(f"a value, '*', a range [a TO b] or a comparison (>, >=, <, <=) after '{name.text}:'", tok)

    def range(self, name: _Token) -> Range:
        opener = self.take(self.peek(_VALUE))
        low_pos = self.peek(_VALUE).pos
        low = self.bound()
        to = self.peek()
        if not (to.kind == "WORD" and to.text.upper() == "TO"):
            raise self.fail("TO between the two ends of the range", to)
        self.take(to)
        high_pos = self.peek(_VALUE).pos
        high = self.bound()
        closer = self.peek()
        if closer.kind not in ("]", "}"):
            raise self.fail(f"']' or '}}' to close the range opened at position {opener.pos}", closer)
        self.take(closer)
        return Range(
            name.text,
            low,
            high,
            opener.kind == "[",
            closer.kind == "]",
            pos=name.pos,
            low_pos=low_pos,
            high_pos=high_pos,
        )

    def bound(self) -> str | None:
        tok = self.peek(_VALUE)
        if tok.kind == "STAR":
            self.take(tok)
            return None
        if tok.kind in ("WORD", "QUOTED"):
            self.take(tok)
            return tok.text
        if tok.kind == "PATTERN":
            raise FilterError("a range end cannot be a wildcard; expected a value or *", tok.pos)
        raise self.fail("a range end (a value or *)", tok)


#: Deepest nesting of parentheses, NOT, ``+`` and ``-`` a filter may have (a person writes a handful).
MAX_DEPTH = 64


def parse(text: str) -> Node:
    """Parse a filter into its syntax tree; raises :class:`FilterError` (empty text included).

    Callers with an optional filter skip empty text themselves, so an empty filter reaching here
    is a mistake worth reporting rather than "match everything".
    """
    try:
        if not isinstance(text, str):
            raise FilterError(f"a filter is text, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: no database can bind it as text
            raise FilterError(
                "the filter holds a character that is not valid Unicode (a lone surrogate)", exc.start
            ) from None
        return _Parser(text).parse()
    except FilterError as err:
        err.text = text
        raise


# ----------------------------------------------------------------------------------------------
# SQL
# ----------------------------------------------------------------------------------------------

_INT_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "INT",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
_FLOAT_TYPES = {"FLOAT", "REAL", "DOUBLE"}
_TEXT_TYPES = {"VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR"}
_BOOL_TYPES = {"BOOLEAN", "BOOL", "LOGICAL"}
_TIMESTAMP_TYPES = {
    "TIMESTAMP",
    "DATETIME",
    "TIMESTAMP_S",
    "TIMESTAMP_MS",
    "TIMESTAMP_NS",
    "TIMESTAMP WITH TIME ZONE",
    "TIMESTAMPTZ",
}
_ORDERED_KINDS = {"int", "float", "date", "timestamp"}
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def _kind(type_name: str) -> str | None:
    """What a DuckDB type compares as: int, float, text, bool, date, timestamp, or None (not filterable)."""
    t = type_name.strip().upper()
    if t.endswith("]") or t.startswith(("STRUCT", "MAP", "UNION")):
        return None
    base = t.split("(", 1)[0].strip()
    if base in _INT_TYPES:
        return "int"
    if base in _FLOAT_TYPES or base in ("DECIMAL", "NUMERIC"):
        return "float"
    if base in _TEXT_TYPES or base == "ENUM":
        return "text"
    if base in _BOOL_TYPES:
        return "bool"
    if base == "DATE":
        return "date"
    if t in _TIMESTAMP_TYPES:
        return "timestamp"
    return None


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class _Column:
    name: str  # as the relation spells it: the only name that reaches SQL
    type_name: str
    kind: str

    @property
    def sql(self) -> str:
        return _quote_ident(self.name)


def _resolve(name: str, pos: int | None, columns: dict[str, str]) -> _Column:
    """The known column a field names (exact, else case-insensitively, as DuckDB itself does)."""
    known = name if name in columns else None
    if known is None:
        folded = [col for col in columns if col.lower() == name.lower()]
        known = folded[0] if len(folded) == 1 else None
    if known is None:
        listing = ", ".join(sorted(col for col, type_name in columns.items() if _kind(type_name))) or "(none)"
        lowered = {col.lower(): col for col in columns}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
        hint = f" (did you mean {lowered[close[0]]!r}?)" if close else ""
        raise FilterError(f"unknown field {name!r}{hint}; the fields are: {listing}", pos)
    kind = _kind(columns[known])
    if kind is None:
        raise FilterError(
            f"field {known!r} has type {columns[known]}, which a filter cannot compare "
            "(lists, vectors, structs and blobs are not filterable)",
            pos,
        )
    return _Column(known, columns[known], kind)


def resolve_field(name: str, columns: dict[str, str]) -> tuple[str, str]:
    """The column a field name means and how it compares (int, float, text, bool, date, timestamp).

    The same matching and the same "unknown field ... did you mean" message as a filter clause, for
    callers that name columns outside a filter (search's score modifiers).
    """
    column = _resolve(name, None, columns)
    return column.name, column.kind


def _coerce(column: _Column, value: str, pos: int | None) -> object:
    """The value as the Python object DuckDB binds for this column's type, or a FilterError saying why not."""
    kind = column.kind
    where = f"field {column.name!r} is {column.type_name}"
    if kind == "text":
        return value
    if kind in ("int", "float"):
        if not _NUMBER.fullmatch(value):
            raise FilterError(f"{where}: expected a number, got {value!r}", pos)
        number = float(value)  # inf for huge literals: compares as "beyond every value", never an error
        if kind == "int":
            # Integers bind as integers; outside BIGINT they stay floats, which DuckDB cannot overflow on.
            # int() of more than 4300 digits raises ValueError (Python's guard against quadratic
            # parsing), and anything past 19 digits is outside BIGINT anyway: those stay floats.
            digits = len(value.lstrip("+-"))
            exact = _INTEGER.fullmatch(value) and digits <= 19
            whole = int(value) if exact else int(number) if number.is_integer() and math.isfinite(number) else None
            if whole is not None and -(2**63) <= whole < 2**63:
                return whole
        return number
    if kind == "bool":
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise FilterError(f"{where}: expected true or false, got {value!r}", pos)
        return lowered == "true"
    if kind == "date":
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise FilterError(f"{where}: expected a date like 2024-05-31, got {value!r}", pos) from None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{where}: expected a timestamp like 2024-05-31T12:00:00, got {value!r}", pos) from None


def _require_ordered(column: _Column, what: str, pos: int | None) -> None:
    if column.kind not in _ORDERED_KINDS:
        raise FilterError(
            f"field {column.name!r} is {column.type_name}: {what} need a numeric, date or timestamp field "
            f"(use {column.name}:value for equality)",
            pos,
        )


def _glob_to_like(pattern: str) -> str:
    """A canonical glob as a LIKE pattern with ``\\`` as ESCAPE: ``*``→``%``, ``?``→``_``, literal %, _ escaped."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            ch = pattern[i + 1]
            out.append("\\" + ch if ch in "%_\\" else ch)
            i += 2
            continue
        out.append({"*": "%", "?": "_", "%": "\\%", "_": "\\_"}.get(ch, ch))
        i += 1
    return "".join(out)


def _sql(node: Node, columns: dict[str, str], params: list) -> str:
    """Append ``node``'s parameters to ``params`` and return its SQL; compound nodes are parenthesised."""
    if isinstance(node, And | Or):
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(_sql(child, columns, params) for child in node.children) + ")"
    if isinstance(node, Not):
        if isinstance(node.child, Exists):
            return f"{_resolve(node.child.field, node.child.pos, columns).sql} IS NULL"
        # IS NOT TRUE rather than NOT: a clause on a NULL is false, so its negation must be true.
        return f"(({_sql(node.child, columns, params)}) IS NOT TRUE)"
    if isinstance(node, Exists):
        return f"{_resolve(node.field, node.pos, columns).sql} IS NOT NULL"
    if isinstance(node, Term):
        column = _resolve(node.field, node.pos, columns)
        if node.op == "like":
            if column.kind != "text":
                raise FilterError(
                    f"field {column.name!r} is {column.type_name}: wildcards (* and ?) only work on text fields",
                    node.value_pos,
                )
            params.append(_glob_to_like(node.value))
            return f"CAST({column.sql} AS VARCHAR) LIKE ? ESCAPE '\\'"
        if node.op != "=":
            _require_ordered(column, "comparisons (>, >=, <, <=)", node.pos)
        params.append(_coerce(column, node.value, node.value_pos))
        return f"{column.sql} {node.op} ?"
    if isinstance(node, Range):
        column = _resolve(node.field, node.pos, columns)
        _require_ordered(column, "ranges", node.pos)
        parts = []
        if node.low is not None:
            params.append(_coerce(column, node.low, node.low_pos))
            parts.append(f"{column.sql} {'>=' if node.low_inclusive else '>'} ?")
        if node.high is not None:
            params.append(_coerce(column, node.high, node.high_pos))
            parts.append(f"{column.sql} {'<=' if node.high_inclusive else '<'} ?")
        if not parts:  # [* TO *]: any value at all
            return f"{column.sql} IS NOT NULL"
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"
    raise TypeError(f"not a filter node: {node!r}")


def to_sql(node: Node, columns: dict[str, str]) -> tuple[str, list]:
    """A WHERE-clause fragment with ``?`` placeholders, and its parameters in placeholder order.

    ``columns`` maps each field name to its DuckDB type name (see :func:`columns_of`). The fragment
    is self-contained, so ``WHERE <fragment> AND <more>`` is safe. Unknown fields, unfilterable
    types and values of the wrong type raise :class:`FilterError`.
    """
    params: list = []
    return _sql(node, columns, params), params


def compile_filter(text: str, columns: dict[str, str]) -> tuple[str, list]:
    """:func:`parse` then :func:`to_sql`, with every error pointing into ``text``."""
    node = parse(text)
    try:
        return to_sql(node, columns)
    except FilterError as err:
        err.text = text
        raise


def columns_of(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    """The filterable columns of a table or view, name → DuckDB type name, in the relation's order.

    List and array columns (the embedding vectors), structs, maps, unions, blobs and the rarer
    scalar types are left out: a clause compares one scalar with one value typed as text, and a
    512-float vector has no meaningful equality or range from text; vectors are searched by FAISS.
    """
    rel = con.table(relation)
    return {
        name: str(dtype) for name, dtype in zip(rel.columns, rel.dtypes, strict=True) if _kind(str(dtype)) is not None
    }
