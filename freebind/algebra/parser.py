"""Tokenizer and recursive-descent parser of space expressions (docs/architecture.md, "Bonds").

Grammar::

    expr    := term ('+' bond)*
    term    := SPACE | '(' expr ')'
    bond    := ('c' | 'd') '(' args ')'
    args    := expert (',' expert)* (',' keyword)*
    expert  := expr
    keyword := NAME '=' value
    value   := NUMBER | '(' NUMBER (',' NUMBER)* ')' | NAME

SPACE is a name (``IB``, ``mini:bind``, ``open_clip:ViT-B-32/laion2b_s34b_b79k``) or a quoted
string (for specs holding spaces or parentheses). Every error is an :class:`ExpressionError`
with the column it happened at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from freebind.algebra.ast import MODALITY_ORDER, Bond, Expr, SpaceRef, chain
from freebind.algebra.keywords import FACTOR_KEYWORDS, OPTIONS, valid_keywords
from freebind.util.errors import ExpressionError

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/:~@]*")
NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
STRING_RE = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
PUNCT = "+(),="


@dataclass(frozen=True)
class Token:
    kind: str  # NAME, NUMBER, STRING, one of PUNCT, or EOF
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + max(1, len(self.text))

    def describe(self) -> str:
        if self.kind == "EOF":
            return "the end of the expression"
        return repr(self.text)


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        ch = source[pos]
        if ch.isspace():
            pos += 1
            continue
        if ch in PUNCT:
            tokens.append(Token(ch, ch, pos))
            pos += 1
            continue
        for kind, regex in (("NAME", NAME_RE), ("NUMBER", NUMBER_RE), ("STRING", STRING_RE)):
            m = regex.match(source, pos)
            if m:
                tokens.append(Token(kind, m.group(), pos))
                pos = m.end()
                break
        else:
            if ch in "\"'":
                raise ExpressionError("unterminated quoted space name", source, pos,
                                      len(source), hint=f"close it with {ch}")
            raise ExpressionError(f"unexpected character {ch!r}", source, pos,
                                  hint="expected a space name, '+', '(', ')', ',' or '='")
    tokens.append(Token("EOF", "", len(source)))
    return tokens


def unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _default_known(name: str) -> tuple[bool, list[str]]:
    from freebind import spaces

    if spaces.is_known(name):
        return True, []
    return False, spaces.suggest(name)


class Parser:
    def __init__(self, source: str,
                 known: Callable[[str], tuple[bool, list[str]]] | None = _default_known):
        self.source = source
        self.tokens = tokenize(source)
        self.i = 0
        self.known = known

    # --- token helpers ------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tok
        self.i += 1
        return tok

    def error(self, message: str, tok: Token | None = None, hint: str | None = None,
              span: tuple[int, int] | None = None) -> ExpressionError:
        tok = tok or self.tok
        start, end = span if span else (tok.start, tok.end)
        return ExpressionError(message, self.source, start, end, hint)

    def expect(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            raise self.error(f"expected {what}, found {self.tok.describe()}")
        return self.advance()

    # --- grammar ----------------------------------------------------------------------------
    def parse(self) -> Expr:
        if self.tok.kind == "EOF":
            raise self.error("empty expression",
                             hint="expected a space such as IB or mini:bind, optionally "
                                  "followed by + c(...) or + d(...)")
        expr = self.expr()
        if self.tok.kind != "EOF":
            if self.tok.kind == ")":
                raise self.error("unmatched ')'", hint="remove it or add a matching '('")
            raise self.error(f"unexpected {self.tok.describe()} after a complete expression",
                             hint="expected '+ c(...)', '+ d(...)' or the end")
        return expr

    def expr(self) -> Expr:
        start = self.tok.start
        base = self.term()
        bonds: list[Bond] = []
        while self.tok.kind == "+":
            self.advance()
            bonds.append(self.bond())
        end = self.tokens[self.i - 1].end
        return chain(base, tuple(bonds), (start, end))

    def term(self) -> Expr:
        tok = self.tok
        if tok.kind == "(":
            self.advance()
            if self.tok.kind == ")":
                raise self.error("empty parentheses", hint="expected a space expression inside")
            inner = self.expr()
            if self.tok.kind != ")":
                if self.tok.kind == "EOF":
                    raise self.error(f"missing ')' to close the '(' at column {tok.start + 1}")
                raise self.error(f"expected ')' to close the '(' at column {tok.start + 1}, "
                                 f"found {self.tok.describe()}")
            self.advance()
            return inner
        if tok.kind == "NAME" and tok.text in ("c", "d") and self.peek().kind == "(":
            raise self.error("a bond needs a base space before it",
                             hint=f"write BASE + {tok.text}(...), e.g. IB + {tok.text}(...)")
        if tok.kind in ("NAME", "STRING"):
            self.advance()
            name = unquote(tok.text) if tok.kind == "STRING" else tok.text
            if not name:
                raise self.error("empty space name", tok)
            self.check_known(name, tok)
            return SpaceRef(name, (tok.start, tok.end))
        if tok.kind == "EOF":
            raise self.error("expected a space name, found the end of the expression")
        raise self.error(f"expected a space name, found {tok.describe()}")

    def check_known(self, name: str, tok: Token) -> None:
        if self.known is None:
            return
        ok, close = self.known(name)
        if not ok:
            hint = (f"did you mean {', '.join(close)}?" if close
                    else "see `freebind spaces` for the registered names")
            raise self.error(f"unknown space {name!r}", tok, hint=hint)

    def bond(self) -> Bond:
        tok = self.tok
        if not (tok.kind == "NAME" and tok.text in ("c", "d")):
            what = tok.describe()
            raise self.error(f"expected a bond c(...) or d(...) after '+', found {what}",
                             hint="bind a space with c(SPACE) (combination) or "
                                  "d(SPACE) (displacement)")
        kind = self.advance().text
        if self.tok.kind != "(":
            raise self.error(f"expected '(' after {kind}, found {self.tok.describe()}")
        open_tok = self.advance()
        experts: list[Expr] = []
        expert_toks: list[Token] = []
        keywords: dict[str, tuple[Token, object]] = {}
        seen_keys: dict[str, Token] = {}
        while True:
            if self.tok.kind == ")":
                if not experts:
                    raise self.error(f"{kind}(...) needs an expert space",
                                     hint=f"e.g. {kind}(CLAP)")
                raise self.error("expected an argument after ','")
            if self.tok.kind == "EOF":
                raise self.error(f"missing ')' to close {kind}( at column {open_tok.start + 1}")
            if self.tok.kind == "NAME" and self.peek().kind == "=":
                key_tok = self.advance()
                self.advance()  # '='
                if not experts:
                    raise self.error(f"{kind}(...) needs an expert space before keyword "
                                     f"arguments", key_tok, hint=f"e.g. {kind}(CLAP, "
                                     f"{key_tok.text}=...)")
                canonical = self.keyword_name(key_tok)
                if canonical in seen_keys:
                    first = seen_keys[canonical]
                    same = "" if first.text == key_tok.text else f" (same as {first.text!r})"
                    raise self.error(f"duplicate keyword {key_tok.text!r}{same}", key_tok,
                                     hint=f"it was already given at column {first.start + 1}")
                seen_keys[canonical] = key_tok
                keywords[canonical] = (key_tok, self.value(key_tok, canonical))
            else:
                if keywords:
                    raise self.error("expert spaces must come before keyword arguments")
                expert_toks.append(self.tok)
                experts.append(self.expr())
                if kind == "d" and len(experts) > 1:
                    raise self.error("d(...) takes exactly one expert", expert_toks[-1],
                                     hint="bind several experts in parallel with c(...)",
                                     span=(expert_toks[-1].start,
                                           self.tokens[self.i - 1].end))
            if self.tok.kind == ",":
                self.advance()
                continue
            if self.tok.kind == ")":
                close = self.advance()
                break
            if self.tok.kind == "EOF":
                raise self.error(f"missing ')' to close {kind}( at column {open_tok.start + 1}")
            raise self.error(f"expected ',' or ')' in {kind}(...), found {self.tok.describe()}")
        return self.make_bond(kind, experts, keywords, (tok.start, close.end))

    def keyword_name(self, key_tok: Token) -> str:
        key = key_tok.text
        if key in FACTOR_KEYWORDS:
            return FACTOR_KEYWORDS[key]
        if key in OPTIONS:
            return key
        raise self.error(f"unknown keyword {key!r}", key_tok,
                         hint="valid keywords: " + ", ".join(valid_keywords()))

    def number(self, what: str) -> tuple[Token, float | int]:
        tok = self.tok
        if tok.kind != "NUMBER":
            raise self.error(f"expected a number for {what}, found {tok.describe()}")
        self.advance()
        text = tok.text
        value: float | int = float(text) if re.search(r"[.eE]", text) else int(text)
        return tok, value

    def choice(self, key_tok: Token, choices) -> str:
        tok = self.tok
        if tok.kind != "NAME":
            raise self.error(f"expected one of {', '.join(choices)} for {key_tok.text}, "
                             f"found {tok.describe()}")
        self.advance()
        if tok.text not in choices:
            raise self.error(f"unknown {key_tok.text} {tok.text!r}", tok,
                             hint=f"valid: {', '.join(choices)}")
        return tok.text

    def value(self, key_tok: Token, canonical: str) -> object:
        if canonical in OPTIONS and OPTIONS[canonical][0] == "choice":
            return self.choice(key_tok, OPTIONS[canonical][1])
        if canonical in OPTIONS and OPTIONS[canonical][0] == "weights":
            if self.tok.kind == "(":
                self.advance()
                values = []
                while True:
                    tok, v = self.number(f"{key_tok.text}")
                    if v < 0:
                        raise self.error("an expert weight must be at least 0", tok)
                    values.append(float(v))
                    if self.tok.kind == ",":
                        self.advance()
                        continue
                    if self.tok.kind == ")":
                        self.advance()
                        break
                    raise self.error(f"expected ',' or ')' in the weights, found "
                                     f"{self.tok.describe()}")
                return tuple(values)
            tok, v = self.number(key_tok.text)
            return (float(v),)
        tok, v = self.number(f"{key_tok.text}")
        if canonical in FACTOR_KEYWORDS.values():
            if not 0.0 <= v <= 1.0:
                raise self.error(f"factor {key_tok.text}={tok.text} is outside [0, 1]", tok,
                                 hint="a factor is the weight of the expert's knowledge, "
                                      "from 0 (none) to 1 (all)")
            return float(v)
        kind, low, inclusive, _ = OPTIONS[canonical]
        if kind == "int":
            if isinstance(v, float):
                if not v.is_integer():
                    raise self.error(f"{key_tok.text} must be a whole number", tok)
                v = int(v)
        else:
            v = float(v)
        if v < low or (v == low and not inclusive):
            bound = f"at least {low}" if inclusive else f"greater than {low}"
            raise self.error(f"{key_tok.text}={tok.text} must be {bound}", tok)
        return v

    def make_bond(self, kind: str, experts: list[Expr], keywords: dict, span) -> Bond:
        factors = tuple((m, keywords[m][1]) for m in MODALITY_ORDER if m in keywords)
        options = tuple(sorted((k, v[1]) for k, v in keywords.items() if k in OPTIONS))
        if "w" in keywords:
            key_tok, weights = keywords["w"]
            if len(weights) != len(experts):
                raise self.error(f"w gives {len(weights)} weight(s) for {len(experts)} "
                                 f"expert(s)", key_tok)
            if sum(weights) <= 0:
                raise self.error("the expert weights must not all be 0", key_tok)
        if kind == "d" and keywords.get("route", (None, "fixed"))[1] == "learned":
            key_tok = keywords["route"][0]
            raise self.error("route=learned applies to combination bonds only", key_tok,
                             hint="a displacement bond d(...) has one expert and a fixed "
                                  "factor; learn weights on a c(...) bond")
        spans = tuple((k, (v[0].start, v[0].end)) for k, v in keywords.items())
        return Bond(kind, tuple(experts), factors, options, span, spans)


def parse(source: str, known: Callable[[str], tuple[bool, list[str]]] | None = _default_known
          ) -> Expr:
    """Parse ``source`` into an AST; raise :class:`ExpressionError` with a column on error.

    ``known(name) -> (ok, suggestions)`` checks space names (the registry by default);
    pass ``None`` to accept any name."""
    if not isinstance(source, str):
        raise TypeError("an expression is a string")
    return Parser(source, known).parse()
