"""The code blocks of README.md and docs/*.md, and how the tests run them (issue 19).

Every fenced block carries a marker, an HTML comment on the line right before it:

``<!-- example: run host [servers=PATH,...] [serves=PATH] -->``
    run by the unit tier, on this host, without root (``pyvfio serve`` stands in for a
    device where one is needed);
``<!-- example: run lab [context=NAME] -->``
    run in the lab guest, as root, by tests/lab/test_docs_lab.py, in the order the
    docs give (a CONTEXTS entry says what NAME prepares);
``<!-- example: output NAME -->``
    a sample of what a command prints: a test in tests/unit/test_docs_examples.py
    produces it for real (SAMPLES says how) and compares it, tolerantly (:func:`text_matches`,
    :func:`json_matches`);
``<!-- example: illustration (WHY) -->``
    not run; WHY says why (a real GPU host, a reboot, a drawing).

A shell block is run line by line: ``$ `` prompts where the doc writes them (the lines
after one are its expected output), else each line a command; a ``# comment`` ends the
command, parts in ``[brackets]`` are optional and left out. ``pyvfio ...`` runs
in-process through typer's CliRunner (a new pyvfio process costs 30-45 s under TCG);
everything else runs through bash. Every ``pyvfio`` command of every shell block, also
an illustration's, is parsed by the CLI itself on the host (:func:`parse_cli`), so a doc
cannot name a command or flag that does not exist.

Python blocks run as scripts, top-level ``await`` allowed (:func:`run_python`).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import inspect
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

_MARKER = re.compile(r"^<!--\s*example:\s*(?P<body>.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<lang>[\w+-]*)\s*$")
KINDS = ("run", "output", "illustration")

#: What each lab context prepares (tests/lab/test_docs_lab.py implements them; the
#: unit tier checks that every marker names one of these).
CONTEXTS: dict[str, str] = {
    "bound": "edu (0000:00:10.0) and nvme (0000:00:11.0) on vfio-pci, given back after",
    "config": "bound, and `dev` the NVMe controller opened (it has MSI-X), `cmd` its "
    "command register",
    "dma": "bound, `dev` edu opened, `iommu` its Iommu, `my_mmap` 1 MiB of memory, "
    "`address` the address of 64 MiB of memory and `size` 1 MiB",
    "irq": "bound, `dev` edu opened, `edu` its driver (edu raises an interrupt when asked)",
}


@dataclass(frozen=True)
class Marker:
    kind: str  # one of KINDS
    where: str | None = None  # run: "host" or "lab"
    name: str | None = None  # output: the sample's name
    reason: str | None = None  # illustration: why it is not run
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: str) -> Marker:
        """``run host k=v``, ``run lab context=X``, ``output NAME``, ``illustration (why)``;
        ValueError saying what is wrong otherwise."""
        kind, _, rest = body.partition(" ")
        rest = rest.strip()
        if kind == "illustration":
            if not (rest.startswith("(") and rest.endswith(")") and len(rest) > 2):
                raise ValueError(f"an illustration says why it is not run: {body!r}")
            return cls(kind, reason=rest[1:-1])
        if kind == "output":
            if not re.fullmatch(r"[\w.-]+", rest):
                raise ValueError(f"an output sample is named: 'output NAME', not {body!r}")
            return cls(kind, name=rest)
        if kind == "run":
            words = rest.split()
            if not words or words[0] not in ("host", "lab"):
                raise ValueError(f"'run host' or 'run lab', not {body!r}")
            options = {}
            for word in words[1:]:
                key, eq, value = word.partition("=")
                if not eq or key not in ("context", "servers", "serves"):
                    raise ValueError(f"unknown option {word!r} in {body!r}")
                options[key] = value
            if "context" in options and options["context"] not in CONTEXTS:
                raise ValueError(f"no context {options['context']!r}: one of {sorted(CONTEXTS)}")
            return cls(kind, where=words[0], options=options)
        raise ValueError(f"an example is 'run', 'output' or 'illustration', not {body!r}")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: Marker | None
    marker_error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def shell(self) -> bool:
        return self.lang in ("sh", "shell", "bash", "console")

    def __str__(self) -> str:
        return self.where


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, each with the marker on the line before it."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening["fence"]
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        marker: Marker | None = None
        error = None
        before = _MARKER.match(lines[i - 1].strip()) if i else None
        if before:
            try:
                marker = Marker.parse(before["body"])
            except ValueError as err:
                error = str(err)
        text = "\n".join(line[len(opening["indent"]) :] for line in lines[i + 1 : end])
        found.append(Block(path, i + 1, opening["lang"], text + "\n", marker, error))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in DOCS for block in blocks(path)]


def indented_code(path: Path) -> list[int]:
    """Lines that start an indented (4-space) code block: unmarked code a reader would
    copy. Fenced blocks and list continuations do not count."""
    found = []
    in_fence = False
    prev = ""
    in_list = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            if re.match(r"\s*([-*+]|\d+\.)\s", line):
                in_list = True
            elif not line.strip():
                pass
            elif not line.startswith(" "):
                in_list = False
            if line.startswith("    ") and not prev.strip() and not in_list and line.strip():
                found.append(number)
        prev = line
    return found


# -- shell blocks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    line: str  # as written, without prompt and comment
    argv: tuple[str, ...]  # optional parts dropped
    output: str | None  # the doc's expected output (lines after a `$ ` prompt), if any


def _drop_optional(line: str) -> str:
    """``pyvfio ls [--json] [--undo [--force]]`` -> ``pyvfio ls``."""
    while True:
        shorter = re.sub(r"\s*\[[^\[\]]*\]", "", line)
        if shorter == line:
            return line
        line = shorter


def _strip_comment(line: str) -> str:
    """``line`` up to its shell comment: a ``#`` at a word's start outside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def commands(block: Block) -> list[Command]:
    """The commands of a shell block, in order, each with its expected output."""
    lines = block.text.splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    found: list[tuple[str, list[str]]] = []
    pending = ""
    for line in lines:
        if prompted and not line.startswith("$ "):
            if found and not pending:
                found[-1][1].append(line)
            continue
        text = line[2:] if prompted else line
        text = pending + _strip_comment(text).strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text:
            found.append((text, []))
    return [
        Command(
            text, tuple(shlex.split(_drop_optional(text))), "\n".join(out) if prompted else None
        )
        for text, out in found
    ]


@functools.cache
def _cli() -> Any:
    """The click command typer makes of pyvfio's app (made once: it takes a while)."""
    import typer.main

    from pyvfio.cli import app

    return typer.main.get_command(app)


def parse_cli(argv: tuple[str, ...], *, whole: bool = True) -> str | None:
    """Parse a ``pyvfio ...`` command line with the CLI's own parser, running nothing;
    None when it parses, else why not. ``whole=False`` is for a command named in prose
    (`` `pyvfio bind` ``): the commands and options must exist, arguments may be missing."""
    import io

    import typer.core
    from typer import _click as click

    command: click.Command = _cli()
    args = list(argv[1:])
    info_name = "pyvfio"
    parent: click.Context | None = None
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            while True:
                ctx = command.make_context(info_name, args, parent=parent)
                if not isinstance(command, typer.core.TyperGroup):
                    return None
                rest = [*ctx._protected_args, *ctx.args]
                if not rest:
                    return None if not whole else f"{info_name}: a command must follow"
                name, sub, args = command.resolve_command(ctx, rest)
                if sub is None or name is None:
                    return f"no command {rest[0]!r}"
                command, info_name, parent = sub, name, ctx
    except typer.Exit:
        return None
    except (click.exceptions.MissingParameter, click.exceptions.NoArgsIsHelpError) as err:
        return None if not whole else err.format_message()
    except click.ClickException as err:
        return err.format_message()


def prose_commands(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """The ``pyvfio ...`` commands ``path`` names in inline code outside its blocks
    (with `...` for "and so on" left out), each with its words."""
    text = re.sub(r"^ *```.*?^ *```", "", path.read_text(), flags=re.S | re.M)
    found = []
    for span in re.finditer(r"`(pyvfio [^`]+)`", text.replace("\n", " ")):
        line = span.group(1)
        if "..." in line.split():
            continue
        found.append((line, tuple(shlex.split(_drop_optional(line)))))
    return found


# -- tolerant comparison ------------------------------------------------------------------

#: In a sample, ``...`` stands for any text and ``<WORD>`` for one word.
_ANY = re.compile(r"\.\.\.|<[A-Za-z_-]+>")


def _pattern(sample: str) -> re.Pattern[str]:
    parts = []
    last = 0
    for hole in _ANY.finditer(sample):
        parts.append(re.escape(sample[last : hole.start()]))
        parts.append(r".*?" if hole.group() == "..." else r"\S+")
        last = hole.end()
    parts.append(re.escape(sample[last:]))
    return re.compile("".join(parts), re.DOTALL)


def text_matches(sample: str, actual: str) -> bool:
    """``actual`` is ``sample`` line by line (trailing spaces aside), ``...`` standing for
    any text and ``<WORD>`` for one word."""
    norm = "\n".join(line.rstrip() for line in sample.strip("\n").splitlines())
    real = "\n".join(line.rstrip() for line in actual.strip("\n").splitlines())
    return _pattern(norm).fullmatch(real) is not None


def json_matches(sample: Any, actual: Any) -> bool:
    """``actual`` has the shape and values of ``sample``, where ``"..."`` as a value is
    anything, a ``"..."`` key lets an object have more keys, a ``"..."`` item lets a list
    have more items (the sample's then each match one of them), and a string holding
    ``...`` matches as in :func:`text_matches`."""
    if sample == "...":
        return True
    if isinstance(sample, dict):
        if not isinstance(actual, dict):
            return False
        keys = set(sample) - {"..."}
        if "..." not in sample and keys != set(actual):
            return False
        return all(k in actual and json_matches(sample[k], actual[k]) for k in keys)
    if isinstance(sample, list):
        if not isinstance(actual, list):
            return False
        if "..." in sample:
            return all(
                any(json_matches(item, real) for real in actual) for item in sample if item != "..."
            )
        return len(sample) == len(actual) and all(map(json_matches, sample, actual))
    if isinstance(sample, str) and isinstance(actual, str) and _ANY.search(sample):
        return text_matches(sample, actual)
    return bool(sample == actual) and type(sample) is type(actual)


# -- python blocks ---------------------------------------------------------------------


def run_python(source: str, namespace: dict[str, Any], where: str) -> None:
    """Run a Python block as a script in ``namespace``; top-level ``await`` runs in a
    fresh event loop."""
    code = compile(source, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        asyncio.run(_await(result))


async def _await(coroutine: Any) -> None:
    await coroutine


def substituted(text: str, paths: Mapping[str, str]) -> str:
    """``text`` with each path of ``paths`` replaced (a doc's /run/edu.sock by a test's
    own folder)."""
    for old, new in sorted(paths.items(), key=lambda item: -len(item[0])):
        text = text.replace(old, new)
    return text


def iter_marked(kind: str, where: str | None = None) -> Iterator[Block]:
    for block in all_blocks():
        marker = block.marker
        if marker and marker.kind == kind and (where is None or marker.where == where):
            yield block


# -- running -------------------------------------------------------------------------------

#: A socket path of a doc (``/tmp/edu.sock``, ``/run/a.sock``): a test runs it in a folder
#: of its own instead, so that runs do not meet and no root is needed for /run.
SOCKET_PATH = re.compile(r"/(?:tmp|run)/[\w.-]+\.sock\b")


def socket_paths(text: str, folder: str) -> dict[str, str]:
    """Each socket path ``text`` names, and where a test puts it in ``folder``."""
    return {path: f"{folder}/{path.rsplit('/', 1)[1]}" for path in SOCKET_PATH.findall(text)}


@dataclass(frozen=True)
class Ran:
    command: Command
    exit_code: int
    output: str

    def problem(self) -> str | None:
        """Why this run does not do what the doc says, or None."""
        if self.exit_code != 0:
            return f"{self.command.line!r} exited {self.exit_code}:\n{self.output}"
        if self.command.output is not None and not text_matches(self.command.output, self.output):
            return (
                f"{self.command.line!r} printed\n{self.output}\nwhere the doc shows\n"
                f"{self.command.output}"
            )
        return None


def run_command(command: Command, cwd: Path) -> Ran:
    """Run one command of a shell block: ``pyvfio`` in this process (CliRunner, in
    ``cwd``), anything else through bash in ``cwd``."""
    import contextlib
    import os
    import subprocess

    if command.argv[:1] == ("pyvfio",):
        from typer.testing import CliRunner

        from pyvfio.cli import app

        old = os.getcwd()
        os.chdir(cwd)
        try:
            done = CliRunner().invoke(app, list(command.argv[1:]))
        finally:
            with contextlib.suppress(OSError):
                os.chdir(old)
        return Ran(command, done.exit_code, done.output)
    line = _drop_optional(command.line)
    proc = subprocess.run(
        ["bash", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    return Ran(command, proc.returncode, proc.stdout + proc.stderr)


#: Output samples that only the lab can produce (tests/lab/test_docs_lab.py does).
LAB_SAMPLES = {"permission-denied"}
