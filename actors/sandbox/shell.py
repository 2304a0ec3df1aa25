"""A small shell lexer for the hook: simple commands, their words and redirections.

Not a shell: enough of POSIX/bash quoting to see what a command line runs. Quotes and
backslashes are removed the way the shell removes them (``r''m``, ``\\rm`` and ``"rm"`` are
all ``rm``); parameter expansions stay literal (``$HOME``) and mark the word dynamic;
command and process substitutions are cut out, mark the word, and come back as nested
command texts to be judged on their own. Standard library only (the hook imports this).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_OPERATORS = ("&&", "||", ";;", "|&", ";", "&", "|", "(", ")", "\n")
_REDIRECT_OPS = ("&>>", "&>", "<<<", "<<-", "<<", "<>", ">>", ">|", ">&", "<&", ">", "<")
RESERVED = frozenset(
    {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "in", "case", "esac"}
    | {"function", "select", "!", "{", "}", "[[", "]]", "coproc"}
)
_FD = re.compile(r"\d+|\{[A-Za-z_]\w*\}")


class ShellSyntaxError(ValueError):
    """The command cannot be split into words (an unclosed quote or substitution)."""


@dataclass
class Word:
    """One word after quote removal."""

    text: str = ""
    dynamic: bool = False  # holds a $expansion or a substitution: its value is not known here
    substitution: bool = False  # holds $(...), `...`, <(...) or >(...)
    glob: bool = False  # holds an unquoted *, ? or [
    quoted: bool = False


@dataclass
class Redirect:
    """``op`` and its target word (``None`` for fd duplications such as ``2>&1``)."""

    op: str
    target: Word | None


@dataclass
class Simple:
    """One simple command: words, redirections, and how its stdin is fed."""

    words: list[Word] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    piped_in: bool = False
    heredoc: bool = False


@dataclass
class Parsed:
    """A command line: its simple commands in order, and the texts of its substitutions."""

    commands: list[Simple]
    nested: list[str]


class _Lexer:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.nested: list[str] = []
        self.heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs) waiting for a newline

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def _balanced(self, open_: str, close: str) -> str:
        """Text up to the matching ``close`` (``self.i`` is just past the opening one)."""
        depth, start = 1, self.i
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "\\":
                self.i += 2
                continue
            if c == "'":
                end = self.s.find("'", self.i + 1)
                if end == -1:
                    raise ShellSyntaxError("unclosed ' inside a substitution")
                self.i = end + 1
                continue
            if c == '"':
                self.i += 1
                self._double_quoted(Word())
                continue
            if c == open_:
                depth += 1
            elif c == close:
                depth -= 1
                if depth == 0:
                    self.i += 1
                    return self.s[start : self.i - 1]
            self.i += 1
        raise ShellSyntaxError(f"unclosed {open_}")

    def _dollar(self, word: Word, in_quotes: bool) -> None:
        """``self.i`` at ``$``: a substitution, arithmetic, or a parameter."""
        nxt = self.s[self.i + 1 : self.i + 2]
        if self.s.startswith("$((", self.i):
            self.i += 3
            self._balanced("(", ")")
            self._expect(")")
            word.text += "$((...))"
            word.dynamic = True
        elif nxt == "(":
            self.i += 2
            self.nested.append(self._balanced("(", ")"))
            word.text += "$(...)"
            word.dynamic = word.substitution = True
        elif nxt == "{":
            self.i += 2
            body = self._balanced("{", "}")
            word.text += "${" + body + "}"
            word.dynamic = True
        elif nxt == "'" and not in_quotes:
            self.i += 2
            word.text += self._ansi_c()
            word.quoted = True
        elif nxt and (nxt.isalnum() or nxt in "_@*#?$!-"):
            match = re.match(r"[A-Za-z_]\w*|\d|[@*#?$!-]", self.s[self.i + 1 :])
            assert match is not None
            word.text += "$" + match.group(0)
            word.dynamic = True
            self.i += 1 + len(match.group(0))
        else:
            word.text += "$"
            self.i += 1

    def _expect(self, char: str) -> None:
        if self.peek() != char:
            raise ShellSyntaxError(f"expected {char!r}")
        self.i += 1

    def _ansi_c(self) -> str:
        out = ""
        escapes = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"', "a": "\a", "e": "\x1b", "0": "\0"}
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "'":
                self.i += 1
                return out
            if c == "\\" and self.i + 1 < len(self.s):
                out += escapes.get(self.s[self.i + 1], "\\" + self.s[self.i + 1])
                self.i += 2
                continue
            out += c
            self.i += 1
        raise ShellSyntaxError("unclosed $'")

    def _backtick(self, word: Word) -> None:
        end = self.i + 1
        while end < len(self.s) and self.s[end] != "`":
            end += 2 if self.s[end] == "\\" else 1
        if end >= len(self.s):
            raise ShellSyntaxError("unclosed `")
        self.nested.append(self.s[self.i + 1 : end].replace("\\`", "`"))
        self.i = end + 1
        word.text += "`...`"
        word.dynamic = word.substitution = True

    def _double_quoted(self, word: Word) -> None:
        """``self.i`` just past the opening ``"``."""
        word.quoted = True
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == '"':
                self.i += 1
                return
            if c == "\\" and self.s[self.i + 1 : self.i + 2] in ("$", "`", '"', "\\", "\n"):
                if self.s[self.i + 1] != "\n":
                    word.text += self.s[self.i + 1]
                self.i += 2
            elif c == "$":
                self._dollar(word, in_quotes=True)
            elif c == "`":
                self._backtick(word)
            else:
                word.text += c
                self.i += 1
        raise ShellSyntaxError('unclosed "')

    def word(self) -> Word | None:
        """The next word at ``self.i`` (after blanks), or None at an operator/redirect/end."""
        while self.peek() in (" ", "\t") or self.s.startswith("\\\n", self.i):
            self.i += 2 if self.peek() == "\\" else 1
        if self.i >= len(self.s) or self.peek() == "#":
            return None
        word = Word()
        started = False
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t":
                break
            if c in "<>" and self.s[self.i + 1 : self.i + 2] == "(":  # process substitution
                self.i += 2
                self.nested.append(self._balanced("(", ")"))
                word.text += "<(...)"
                word.dynamic = word.substitution = True
                started = True
                continue
            if c in ";&|()\n<>":
                break
            started = True
            self._unquoted(word, c)
        return word if started else None

    def _unquoted(self, word: Word, c: str) -> None:
        """One piece of a word outside quotes, starting with ``c`` at ``self.i``."""
        if c == "\\":
            if self.s[self.i + 1 : self.i + 2] != "\n":  # a backslash-newline joins lines
                word.text += self.s[self.i + 1 : self.i + 2]
                word.quoted = True
            self.i += 2
        elif c == "'":
            end = self.s.find("'", self.i + 1)
            if end == -1:
                raise ShellSyntaxError("unclosed '")
            word.text += self.s[self.i + 1 : end]
            word.quoted = True
            self.i = end + 1
        elif c == '"':
            self.i += 1
            self._double_quoted(word)
        elif c == "$":
            self._dollar(word, in_quotes=False)
        elif c == "`":
            self._backtick(word)
        else:
            if c in "*?[":
                word.glob = True
            word.text += c
            self.i += 1

    def skip_heredocs(self) -> None:
        """At a newline with heredocs pending: skip their bodies."""
        while self.heredocs:
            delimiter, strip = self.heredocs.pop(0)
            while self.i < len(self.s):
                end = self.s.find("\n", self.i)
                line = self.s[self.i : end if end != -1 else len(self.s)]
                self.i = end + 1 if end != -1 else len(self.s)
                if (line.lstrip("\t") if strip else line) == delimiter:
                    break


def parse(text: str) -> Parsed:
    """Split a command line into simple commands.

    Raises:
        ShellSyntaxError: an unclosed quote or substitution.
    """
    lexer = _Lexer(text)
    commands: list[Simple] = []
    current = Simple()
    while True:
        word = lexer.word()
        s, i = lexer.s, lexer.i
        if word is not None:
            if s[i : i + 1] in ("<", ">") and _FD.fullmatch(word.text) and not word.quoted:
                pass  # "2>file": the word is the redirect's fd
            else:
                current.words.append(word)
            continue
        if i >= len(s) or s[i] == "#":
            if s[i : i + 1] == "#":
                end = s.find("\n", i)
                lexer.i = end if end != -1 else len(s)
                continue
            break
        op = next((o for o in _REDIRECT_OPS if s.startswith(o, i)), None)
        if op is not None:
            lexer.i += len(op)
            _redirect(lexer, current, op)
            continue
        op = next(o for o in _OPERATORS if s.startswith(o, i))
        lexer.i += len(op)
        if op == "\n" and lexer.heredocs:
            lexer.skip_heredocs()
        if current.words or current.redirects:
            commands.append(current)
        current = Simple(piped_in=op in ("|", "|&"))
    if current.words or current.redirects:
        commands.append(current)
    return Parsed(commands=commands, nested=lexer.nested)


def _redirect(lexer: _Lexer, current: Simple, op: str) -> None:
    """The redirect ``op`` (``lexer.i`` just past it) of the command being read, with its target."""
    rest = lexer.s[lexer.i :]
    if op in (">&", "<&") and re.match(r"\s*(?:\d+|-)(?=$|[\s;&|()<>])", rest):
        match = re.match(r"\s*(?:\d+|-)", rest)
        assert match is not None
        lexer.i += len(match.group(0))
        current.redirects.append(Redirect(op, None))  # a duplicated or closed fd: no file
        return
    target = lexer.word()
    if target is None:
        raise ShellSyntaxError(f"{op} without a target")
    if op in ("<<", "<<-"):
        lexer.heredocs.append((target.text, op == "<<-"))
        current.heredoc = True
    elif op == "<<<":
        current.heredoc = True
    current.redirects.append(Redirect(op, target))
