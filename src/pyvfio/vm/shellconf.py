"""Read shell-sourced configuration files without running them.

``/etc/default/grub`` (and Debian's ``/etc/default/grub.d/*.cfg``), ``mkinitcpio.conf``
and dracut's ``*.conf`` are shell scripts that their tools source. ``pyvfio persist``
needs the values a few variables end up with (``GRUB_CMDLINE_LINUX``, ``MODULES``, ...)
to know what is there already, and it must be sure that a line it appends is read as a
line of its own: that the file does not end inside a quote, an array or a continuation.

Running the files would answer both, but would also run whatever they run (as root).
So this module reads them: a lexer for the part of sh/bash such files use (comments,
the three kinds of quotes, ``\\`` escapes and continuations, ``$NAME``, ``${NAME}``,
``"${NAME[@]}"``, arrays over many lines, here-documents), and an evaluator that follows
the *assignments* of the variables asked for, in order, across files.

It is conservative, never clever: an assignment to a variable of interest that it cannot
evaluate exactly (a command substitution, an unknown variable, inside ``if``/``case``/a
function or after ``&&``, ``unset``, ``declare``, a ``source`` of another file) makes it
raise :class:`ShellReadError` naming the line, and the caller refuses instead of guessing.
Assignments to other variables may be anything: they are skipped, but they are lexed, so
quotes and continuations are always tracked to the end of the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<plus>\+?)=")
_META = frozenset(" \t\n;&|()<>")
#: Words that open or close a compound command when they come first.
_OPENERS = frozenset({"if", "while", "until", "for", "select", "case", "{"})
_CLOSERS = frozenset({"fi", "done", "esac", "}"})
_PREFIXES = frozenset({"then", "do", "else", "elif", "!"})
#: Builtins that read other files or change variables in ways this reader cannot follow.
_OPAQUE = frozenset({".", "source", "eval"})


class ShellReadError(Exception):
    """The file cannot be read exactly; ``line`` (1-based) is where, ``str()`` says why."""

    def __init__(self, why: str, line: int) -> None:
        super().__init__(why)
        self.why = why
        self.line = line


@dataclass(frozen=True)
class Literal:
    text: str
    quoted: bool


@dataclass(frozen=True)
class Var:
    """``$NAME``, ``${NAME}`` or, with ``every``, ``${NAME[@]}`` / ``${NAME[*]}``."""

    name: str
    quoted: bool
    every: bool = False


@dataclass(frozen=True)
class Dynamic:
    """Something only running the shell would tell: ``$(...)``, backticks, ``${X:-y}``."""

    raw: str


Part = Literal | Var | Dynamic


@dataclass(frozen=True)
class Word:
    parts: tuple[Part, ...]
    line: int
    #: For ``NAME=(...)``: the elements (the parts above are then the ``NAME=`` only).
    elements: tuple[Word, ...] | None = None

    def literal(self) -> str | None:
        """The word's text if it is a plain unquoted literal (a command name, a keyword)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Literal) and self.elements is None:
            part = self.parts[0]
            return None if part.quoted else part.text
        return None

    def leading_text(self) -> str:
        """The literal text the word starts with, quoted or not (for spotting NAME=)."""
        out = []
        for part in self.parts:
            if not isinstance(part, Literal):
                break
            out.append(part.text)
        return "".join(out)


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "op" (; & | && || ( ) ;; and redirections), "newline"
    line: int
    word: Word | None = None
    op: str = ""


@dataclass
class _Lexer:
    text: str
    pos: int = 0
    line: int = 1
    heredocs: list[tuple[str, bool]] = field(default_factory=list)

    def peek(self, n: int = 0) -> str:
        i = self.pos + n
        return self.text[i] if i < len(self.text) else ""

    def advance(self, n: int = 1) -> str:
        chunk = self.text[self.pos : self.pos + n]
        self.line += chunk.count("\n")
        self.pos += n
        return chunk

    def error(self, why: str, line: int | None = None) -> ShellReadError:
        return ShellReadError(why, self.line if line is None else line)

    def _continuation(self) -> None:
        """A backslash-newline: the line goes on. At the end of the file it would swallow
        the next line anything appends."""
        self.advance(2)
        if self.pos >= len(self.text):
            raise self.error("the file ends in a line continuation (a backslash)")

    # -- tokens ------------------------------------------------------------------------

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        while self.pos < len(self.text):
            c = self.peek()
            if c in " \t":
                self.advance()
            elif c == "\\" and self.peek(1) == "\n":
                self._continuation()
            elif c == "#":
                while self.pos < len(self.text) and self.peek() != "\n":
                    self.advance()
            elif c == "\n":
                out.append(Token("newline", self.line))
                self.advance()
                self._read_heredocs()
            elif c in ";&|()<>":
                out.append(self._operator(out))
            else:
                word = self._word(array_ok=True)
                if (word.literal() or "x").isdigit() and self.peek() in ("<", ">"):
                    continue  # the file descriptor of a redirection (2>&1), not a word
                out.append(Token("word", word.line, word=word))
        if self.heredocs:
            raise self.error("a here-document is not closed before the end of the file")
        return out

    def _operator(self, out: list[Token]) -> Token:
        line = self.line
        redirections = ("&>>", "&>", "<<-", "<<<", "<<", ">>", ">&", "<&", ">|", "<>")
        for op in (";;", "&&", "||", *redirections):
            if self.text.startswith(op, self.pos):
                self.advance(len(op))
                if op in ("<<", "<<-"):
                    self._heredoc_start(strip_tabs=op == "<<-")
                return Token("op", line, op=op)
        return Token("op", line, op=self.advance())

    def _heredoc_start(self, *, strip_tabs: bool) -> None:
        while self.peek() in " \t":
            self.advance()
        if not self.peek() or self.peek() in _META:
            raise self.error("a here-document without a delimiter")
        delimiter = self._word(array_ok=False)
        text = "".join(p.text if isinstance(p, Literal) else "" for p in delimiter.parts)
        self.heredocs.append((text, strip_tabs))

    def _read_heredocs(self) -> None:
        """Skip the bodies of the here-documents opened on the line just ended."""
        for delimiter, strip_tabs in self.heredocs:
            start = self.line
            while True:
                if self.pos >= len(self.text):
                    raise self.error(f"the here-document of line {start} never ends", start)
                end = self.text.find("\n", self.pos)
                end = len(self.text) if end < 0 else end
                body = self.text[self.pos : end]
                self.advance(end - self.pos + (1 if end < len(self.text) else 0))
                if (body.lstrip("\t") if strip_tabs else body) == delimiter:
                    break
        self.heredocs.clear()

    # -- words -------------------------------------------------------------------------

    def _word(self, *, array_ok: bool) -> Word:
        line = self.line
        parts: list[Part] = []
        buf: list[str] = []

        def flush() -> None:
            if buf:
                parts.append(Literal("".join(buf), quoted=False))
                buf.clear()

        while self.pos < len(self.text):
            c = self.peek()
            if c in _META:
                if (
                    c == "("
                    and array_ok
                    and not parts
                    and _ASSIGN.fullmatch("".join(buf)) is not None
                ):
                    flush()
                    return Word(tuple(parts), line, self._array())
                break
            if c == "\\":
                if self.peek(1) == "\n":
                    self._continuation()
                elif self.peek(1) == "":
                    raise self.error("the file ends in a backslash")
                else:
                    flush()
                    self.advance()
                    parts.append(Literal(self.advance(), quoted=True))
            elif c == "'":
                flush()
                parts.append(Literal(self._single_quoted(), quoted=True))
            elif c == '"':
                flush()
                parts.extend(self._double_quoted())
            elif c == "$":
                flush()
                parts.append(self._dollar(quoted=False))
            elif c == "`":
                flush()
                parts.append(self._backticks())
            else:
                buf.append(self.advance())
        flush()
        return Word(tuple(parts), line)

    def _array(self) -> tuple[Word, ...]:
        start = self.line
        self.advance()  # (
        elements: list[Word] = []
        while True:
            c = self.peek()
            if not c:
                raise self.error(f"the array opened on line {start} is not closed", start)
            if c in " \t\n":
                self.advance()
            elif c == "\\" and self.peek(1) == "\n":
                self._continuation()
            elif c == "#":
                while self.peek() and self.peek() != "\n":
                    self.advance()
            elif c == ")":
                self.advance()
                return tuple(elements)
            elif c in _META:
                raise self.error(f"{c!r} inside the array opened on line {start}")
            else:
                elements.append(self._word(array_ok=False))

    def _single_quoted(self) -> str:
        start = self.line
        self.advance()
        end = self.text.find("'", self.pos)
        if end < 0:
            raise self.error(f"the ' opened on line {start} is not closed", start)
        text = self.text[self.pos : end]
        self.advance(end - self.pos + 1)
        return text

    def _double_quoted(self) -> list[Part]:
        start = self.line
        self.advance()
        parts: list[Part] = []
        buf: list[str] = []
        while True:
            c = self.peek()
            if not c:
                raise self.error(f'the " opened on line {start} is not closed', start)
            if c == '"':
                self.advance()
                break
            if c == "\\" and self.peek(1) in ('"', "\\", "$", "`", "\n"):
                self.advance()
                escaped = self.advance()
                if escaped != "\n":
                    buf.append(escaped)
            elif c == "$" or c == "`":
                if buf:
                    parts.append(Literal("".join(buf), quoted=True))
                    buf.clear()
                parts.append(self._dollar(quoted=True) if c == "$" else self._backticks())
            else:
                buf.append(self.advance())
        if buf or not parts:
            parts.append(Literal("".join(buf), quoted=True))
        return parts

    def _dollar(self, *, quoted: bool) -> Part:
        start = self.pos
        nxt = self.peek(1)
        if nxt == "(":
            self.advance(2)
            self._skip_balanced("(", ")")
            return Dynamic(self.text[start : self.pos])
        if nxt == "{":
            self.advance(2)
            self._skip_balanced("{", "}")
            inner = self.text[start + 2 : self.pos - 1]
            m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(\[[@*]\])?", inner)
            if m:
                return Var(m.group(1), quoted, every=m.group(2) is not None)
            return Dynamic(self.text[start : self.pos])
        if nxt == "'" and not quoted:  # bash's $'...': escapes this reader does not decode
            self.advance()
            self._single_quoted()
            return Dynamic(self.text[start : self.pos])
        m = _NAME.match(self.text, self.pos + 1)
        if m:
            self.advance(1 + len(m.group()))
            return Var(m.group(), quoted)
        if nxt and nxt in "0123456789@*#?$!-":
            self.advance(2)
            return Dynamic(self.text[start : self.pos])
        self.advance()
        return Literal("$", quoted)

    def _backticks(self) -> Dynamic:
        start, line = self.pos, self.line
        self.advance()
        while True:
            c = self.peek()
            if not c:
                raise self.error(f"the ` opened on line {line} is not closed", line)
            self.advance(2 if c == "\\" else 1)
            if c == "`":
                return Dynamic(self.text[start : self.pos])

    def _skip_balanced(self, opening: str, closing: str) -> None:
        """Past the ``closing`` that matches an ``opening`` already read, across quotes."""
        line = self.line
        depth = 1
        while depth:
            c = self.peek()
            if not c:
                raise self.error(f"the {opening} opened on line {line} is not closed", line)
            if c == "\\":
                self.advance(2)
            elif c == "'":
                self._single_quoted()
            elif c == '"':
                self._double_quoted()
            elif c == "`":
                self._backticks()
            else:
                self.advance()
                if c == opening:
                    depth += 1
                elif c == closing:
                    depth -= 1


def tokenize(text: str) -> list[Token]:
    """The file as tokens; raises :class:`ShellReadError` where it is not complete sh."""
    return _Lexer(text).tokens()


# -- statements ------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One simple command: its words, the line it starts on, and whether it runs only
    sometimes or in a subshell (inside a compound command, after ``&&``/``||``, in a
    pipeline or in the background), where its assignments may not count."""

    words: tuple[Word, ...]
    line: int
    conditional: bool


@dataclass
class _Nesting:
    depth: int = 0  # open if/while/for/case/{ }/( ) around the current command
    in_case: int = 0  # open case ... esac (their patterns hold unbalanced ")")


def statements(text: str) -> list[Statement]:
    """The simple commands of ``text`` in order, each marked conditional or not."""
    out: list[Statement] = []
    nest = _Nesting()
    tokens = tokenize(text)
    words: list[Word] = []
    line = 1
    after = ""  # the operator before the current command
    n = 0
    while n < len(tokens):
        tok = tokens[n]
        n += 1
        if tok.kind == "word":
            assert tok.word is not None
            if not words:
                line = tok.line
            words.append(tok.word)
            continue
        if tok.op == "(" and not nest.in_case:
            named = len(words) == 1 or (len(words) == 2 and words[0].literal() == "function")
            if named and n < len(tokens) and tokens[n].op == ")":
                # "name() { ...; }": a function definition; its body's { } nest by
                # themselves and nothing in it runs when the file is sourced.
                n += 1
                words = []
                nest.depth += 1
                _record(out, [], line, after, "", nest)
                nest.depth -= 1
                after = ";"
                continue
            if not words:
                nest.depth += 1  # a subshell
            continue
        if tok.op == ")":
            if not nest.in_case:
                _record(out, words, line, after, ";", nest)
                words = []
                nest.depth -= 1
                if nest.depth < 0:
                    raise ShellReadError("a ')' without its '('", tok.line)
            continue
        if tok.kind == "op" and tok.op not in (";", ";;", "&", "&&", "||", "|"):
            # A redirection: the next word is its target, not a word of the command (a
            # here-document's delimiter was taken by the lexer already).
            if tok.op not in ("<<", "<<-") and n < len(tokens) and tokens[n].kind == "word":
                n += 1
            continue
        before = tok.op if tok.kind == "op" else ""
        _record(out, words, line, after, before, nest)
        words = []
        after = before
    _record(out, words, line, after, "", nest)
    if nest.depth > 0:
        raise ShellReadError("a compound command (if, case, a loop, { }) is not closed", line)
    return out


def _record(
    out: list[Statement], words: list[Word], line: int, after: str, before: str, nest: _Nesting
) -> None:
    """Add the command ``words`` (less its keywords) to ``out``; track the nesting."""
    i = 0
    if nest.in_case:
        # Patterns and the commands of one branch: all conditional. Only the keywords
        # that nest (case) or end (esac) matter here.
        for word in words:
            w = word.literal()
            if w == "case":
                nest.in_case += 1
                nest.depth += 1
            elif w == "esac":
                nest.in_case -= 1
                nest.depth -= 1
        if words:
            out.append(Statement(tuple(words), line, True))
        return
    while i < len(words):
        w = words[i].literal()
        if w in _PREFIXES:
            i += 1
        elif w == "function":
            i += 2  # "function NAME": the body's { } that follow nest by themselves
        elif w in _OPENERS:
            nest.depth += 1
            i += 1
            if w == "case":
                nest.in_case += 1
                _record(out, words[i:], line, after, before, nest)
                return
            if w in ("for", "select"):
                return  # "for x in a b": the list is not a command
        elif w in _CLOSERS:
            nest.depth -= 1
            i += 1
            if nest.depth < 0:
                raise ShellReadError(f"'{w}' without its opening keyword", line)
        else:
            break
    rest = tuple(words[i:])
    if rest:
        conditional = nest.depth > 0 or after in ("&&", "||", "|") or before in ("|", "&")
        out.append(Statement(rest, line, conditional))


# -- evaluation ------------------------------------------------------------------------


class Unknown:
    """A variable whose value only running the file would tell."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()
Value = str | tuple[str, ...] | Unknown


@dataclass(frozen=True)
class Origin:
    """Where a variable of interest was set, and whether that kept the earlier value
    (``X="$X more"``, ``X+=...``, ``X=(new "${X[@]}")``) or replaced it."""

    path: str
    line: int
    keeps_earlier: bool


@dataclass
class Env:
    """Variables as the files left them; ``names`` are followed exactly or refused."""

    names: frozenset[str]
    values: dict[str, Value] = field(default_factory=dict)
    origins: dict[str, list[Origin]] = field(default_factory=dict)

    def source(self, path: str, text: str) -> None:
        """Follow ``text`` (the file ``path``) as if sourced after the ones before."""
        try:
            found = statements(text)
        except ShellReadError as err:
            raise ShellReadError(f"{path} line {err.line}: {err.why}", err.line) from None
        for st in found:
            self._statement(path, st)

    def get(self, name: str) -> Value:
        if name in self.values:
            return self.values[name]
        # The variables followed start unset, as for the tools that source the files;
        # anything else may come from their environment.
        return "" if name in self.names else UNKNOWN

    def text(self, name: str) -> str:
        """A followed variable as one string (an array's elements joined by spaces)."""
        value = self.get(name)
        assert not isinstance(value, Unknown), f"{name} is not followed"
        return value if isinstance(value, str) else " ".join(value)

    def _refuse(self, path: str, line: int, why: str) -> ShellReadError:
        return ShellReadError(f"{path} line {line}: {why}", line)

    def _statement(self, path: str, st: Statement) -> None:
        words = list(st.words)
        if words[0].literal() in ("export", "readonly"):
            # "export NAME" changes no value; "export NAME=x" is an assignment.
            words = [w for w in words[1:] if _assignment(w) is not None]
            if not words:
                return
        assigns: list[tuple[str, bool, Word]] = []
        for word in words:
            found = _assignment(word)
            if found is None:
                break
            assigns.append((*found, word))
        command = words[len(assigns) :]
        if command:
            cmd = command[0].literal()
            if cmd in _OPAQUE:
                raise self._refuse(
                    path, st.line, f"'{cmd}' runs other code, which this reader cannot follow"
                )
            mentioned = self._mentions(command)
            if mentioned:
                raise self._refuse(
                    path, st.line, f"{mentioned} is changed by a command ({cmd or 'a command'})"
                )
            for name, _, _ in assigns:
                if name in self.names:
                    raise self._refuse(path, st.line, f"{name} is set for one command only")
            return
        for name, plus, word in assigns:
            if name in self.names and st.conditional:
                raise self._refuse(
                    path,
                    st.line,
                    f"{name} is set inside if/case/a loop/a function, after && or ||, or in "
                    "a subshell: only running the file would tell its value",
                )
            value, keeps = self._value(name, plus, word)
            if name not in self.names:
                self.values[name] = UNKNOWN if st.conditional or value is None else value
                continue
            if value is None:
                raise self._refuse(
                    path,
                    st.line,
                    f"the value of {name} holds something only running the file would tell "
                    f"({self._first_unknown(word)})",
                )
            self.values[name] = value
            self.origins.setdefault(name, []).append(Origin(path, st.line, keeps))

    def _mentions(self, words: Sequence[Word]) -> str | None:
        """A followed variable a command names (unset X, read X, declare X=...)."""
        for word in words:
            text = word.leading_text()
            m = _NAME.match(text)
            if m and m.group() in self.names:
                rest = text[m.end() :]
                if rest == "" or rest[0] in "=+[":
                    return m.group()
        return None

    def _value(self, name: str, plus: bool, word: Word) -> tuple[Value | None, bool]:
        """What ``NAME=word`` / ``NAME+=word`` leaves in NAME (None: not exactly known),
        and whether it keeps the earlier value."""
        old = self.get(name)
        if word.elements is not None:
            keeps = plus
            fields: list[str] = []
            for element in word.elements:
                got = self._fields(element)
                if got is None:
                    return None, keeps
                fields += got
                keeps = keeps or any(isinstance(p, Var) and p.name == name for p in element.parts)
            if not plus:
                return tuple(fields), keeps
            if isinstance(old, Unknown):
                return None, keeps
            if isinstance(old, str):  # bash turns the string into element 0
                return ((old,) if old else ()) + tuple(fields), keeps
            return old + tuple(fields), keeps
        first = word.parts[0]
        assert isinstance(first, Literal)
        parts = [Literal(first.text.split("=", 1)[1], quoted=False), *word.parts[1:]]
        keeps = plus or any(isinstance(p, Var) and p.name == name for p in parts)
        text = self._scalar(parts)
        if text is None:
            return None, keeps
        if not plus:
            return text, keeps
        if isinstance(old, str):
            return old + text, keeps
        return None, keeps  # += of a string onto an array appends to element 0: refuse

    def _scalar(self, parts: Iterable[Part]) -> str | None:
        out = []
        for part in parts:
            if isinstance(part, Literal):
                out.append(part.text)
            elif isinstance(part, Var):
                value = self.get(part.name)
                if isinstance(value, Unknown):
                    return None
                if isinstance(value, tuple):
                    value = " ".join(value) if part.every else (value[0] if value else "")
                out.append(value)
            else:
                return None
        return "".join(out)

    def _fields(self, word: Word) -> list[str] | None:
        """The array elements one word of ``NAME=( ... )`` gives (None: not exactly)."""
        parts = word.parts
        if len(parts) == 1 and isinstance(parts[0], Var):
            var = parts[0]
            value = self.get(var.name)
            if isinstance(value, Unknown):
                return None
            items = list(value) if isinstance(value, tuple) else [value]
            if not var.every:
                items = items[:1]
            if var.quoted:
                return items
            return [f for item in items for f in item.split()]  # word splitting
        if any(isinstance(p, Var) and (not p.quoted or p.every) for p in parts):
            return None  # splitting glued to other text: rare, and easy to get wrong
        text = self._scalar(parts)
        return None if text is None else [text]

    def _first_unknown(self, word: Word) -> str:
        for element in word.elements or (word,):
            for part in element.parts:
                if isinstance(part, Dynamic):
                    return part.raw
                if isinstance(part, Var) and isinstance(self.get(part.name), Unknown):
                    return f"${{{part.name}}}"
        return "an expansion glued to other text"


def _assignment(word: Word) -> tuple[str, bool] | None:
    """(NAME, +=) if ``word`` is an assignment, else None."""
    if not word.parts:
        return None
    first = word.parts[0]
    if not isinstance(first, Literal) or first.quoted:
        return None
    m = _ASSIGN.match(first.text)
    return None if m is None else (m.group("name"), bool(m.group("plus")))


def check_complete(text: str) -> None:
    """Raise :class:`ShellReadError` unless ``text`` ends outside any quote, array,
    continuation, here-document or compound command (so a line appended is a line)."""
    statements(text)
