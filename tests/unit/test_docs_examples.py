"""The docs' examples, on the host (issue 19): every code block of README.md and docs/*.md
is marked, the ``run host`` ones run here, the ``output`` samples are what the commands
print, and every ``pyvfio`` command in the docs parses. The ``run lab`` blocks run in
tests/lab/test_docs_lab.py. How blocks are marked and run: tests/docs_examples.py."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import docs_examples as dx
from docs_examples import Block
from pyvfio.cli import app
from pyvfio.errors import UnsafeNoIommuError
from pyvfio.host import bind, grant
from pyvfio.host.journal import STATE_DIR_ENV
from pyvfio.iommu import Iommu
from pyvfio.server import EduDevice, Server
from pyvfio.testing import SimulatedKernel, q35_lab

runner = CliRunner()


# -- every block is marked, every command parses -------------------------------------------


def test_every_code_block_of_the_docs_is_marked() -> None:
    blocks = dx.all_blocks()
    assert len(blocks) > 30  # the parser found the docs' blocks
    unmarked = [
        f"{b.where}: {b.marker_error or 'no <!-- example: ... --> line before it'}"
        for b in blocks
        if b.marker is None
    ]
    assert not unmarked, "mark each block (tests/docs_examples.py says how):\n" + "\n".join(
        unmarked
    )


def test_the_docs_have_no_indented_code_blocks() -> None:
    """An indented block cannot carry a marker: fence it."""
    found = [
        f"{path.relative_to(dx.ROOT)}:{line}" for path in dx.DOCS for line in dx.indented_code(path)
    ]
    assert not found, f"indented code (fence it and mark it): {found}"


def test_an_unmarked_block_and_a_bad_marker_are_found(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "text\n\n```sh\nls\n```\n\n<!-- example: illustration -->\n```python\npass\n```\n\n"
        "<!-- example: run lab context=nosuch -->\n```sh\nls\n```\n\n    indented code\n"
    )
    first, second, third = dx.blocks(doc)
    assert first.marker is None and first.marker_error is None and first.line == 3
    assert second.marker is None and "says why" in (second.marker_error or "")
    assert third.marker is None and "no context 'nosuch'" in (third.marker_error or "")
    assert dx.indented_code(doc) == [17]


def _shell_commands() -> Iterator[tuple[Block, dx.Command]]:
    for block in dx.all_blocks():
        if block.shell:
            for command in dx.commands(block):
                yield block, command


def test_every_pyvfio_command_in_the_docs_parses() -> None:
    """Also the illustrations': a renamed command or flag fails here."""
    seen = 0
    problems = []
    for block, command in _shell_commands():
        if command.argv[:1] == ("pyvfio",):
            seen += 1
            why = dx.parse_cli(command.argv)
            if why is not None:
                problems.append(f"{block.where}: {command.line}: {why}")
    assert seen > 20
    assert not problems, "\n".join(problems)


def test_every_pyvfio_command_named_in_the_docs_prose_exists() -> None:
    seen = 0
    problems = []
    for path in dx.DOCS:
        for line, argv in dx.prose_commands(path):
            seen += 1
            why = dx.parse_cli(argv, whole=False)
            if why is not None:
                problems.append(f"{path.relative_to(dx.ROOT)}: `{line}`: {why}")
    assert seen > 100
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("argv", "wrong"),
    [
        (("pyvfio", "ls", "--bogus"), "--bogus"),
        (("pyvfio", "nosuch"), "nosuch"),
        (("pyvfio", "vm", "qemu", "0a:00.0", "--memry", "4G"), "--memry"),
        (("pyvfio", "grant", "0000:00:10.0"), "--user"),
    ],
)
def test_parse_cli_refuses_what_the_cli_refuses(argv: tuple[str, ...], wrong: str) -> None:
    why = dx.parse_cli(argv)
    assert why is not None and wrong in why, why


def test_a_command_in_prose_may_leave_out_its_arguments_not_name_wrong_options() -> None:
    assert dx.parse_cli(("pyvfio", "grant"), whole=False) is None
    assert dx.parse_cli(("pyvfio", "grant")) is not None
    assert dx.parse_cli(("pyvfio", "nvme"), whole=False) is None
    why = dx.parse_cli(("pyvfio", "grant", "--usr", "x"), whole=False)
    assert why is not None and "--usr" in why, why


def test_commands_drop_comments_and_optional_parts_and_keep_prompted_output() -> None:
    block = Block(
        dx.ROOT / "x.md",
        1,
        "console",
        "$ pyvfio ls [--json] [--undo [--force]]   # groups\ngroup 1\n$ echo '# not a comment'\n",
        None,
    )
    ls, echo = dx.commands(block)
    assert ls.argv == ("pyvfio", "ls") and ls.output == "group 1"
    assert echo.argv == ("echo", "# not a comment") and echo.output == ""


# -- the tolerant comparison ---------------------------------------------------------------


def test_text_matches_with_holes() -> None:
    assert dx.text_matches(
        "serving edu on <PATH> (vfio-user); ...",
        "serving edu on /x/e.sock (vfio-user); Ctrl-C stops",
    )
    assert not dx.text_matches("serving edu on <PATH>", "serving edu on /x y")
    assert dx.text_matches("a\n  b  \n", "a\n  b")
    assert not dx.text_matches("a 64 KiB", "a 64 MiB")


def test_json_matches_with_holes() -> None:
    sample = {"a": 1, "b": ["x", "..."], "c": {"...": "as above"}, "d": "not viable: ..."}
    real = {"a": 1, "b": ["y", "x"], "c": {"k": 2}, "d": "not viable: 1f.0 on lpc_ich"}
    assert dx.json_matches(sample, real)
    assert not dx.json_matches(sample, {**real, "e": 0})  # no "..." key: no more keys
    assert not dx.json_matches(sample, {**real, "a": True})  # 1 is not True
    assert not dx.json_matches(sample, {**real, "b": ["y"]})
    assert not dx.json_matches([1], [1, 2])


# -- run host ------------------------------------------------------------------------------


@contextlib.contextmanager
def _edu_servers(paths: list[str]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for path in paths:
            server = stack.enter_context(Server(EduDevice(), path))
            server.start()
            stack.callback(server.stop)
        yield


def _wait_for(path: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(
                f"it ended ({proc.returncode}) before serving {path}: {proc.communicate()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {path} after 60 s")
        time.sleep(0.05)


@contextlib.contextmanager
def _background(argv: list[str], path: str, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """A command that serves until stopped, running until the doc's blocks are done."""
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for(path, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _run_host_block(block: Block, folder: Path, stack: contextlib.ExitStack) -> None:
    assert block.marker is not None
    paths = dx.socket_paths(block.text, str(folder))
    text = dx.substituted(block.text, paths)
    servers = [paths.get(p, p) for p in block.marker.options.get("servers", "").split(",") if p]
    serves = block.marker.options.get("serves")
    if block.shell:
        for command in dx.commands(Block(block.path, block.line, block.lang, text, block.marker)):
            if command.argv[:2] == ("pyvfio", "serve") and "--once" not in command.argv:
                # serves until stopped: the doc's later blocks talk to it
                argv = [sys.executable, "-m", "pyvfio", *command.argv[1:]]
                proc = stack.enter_context(
                    _background(argv, command.argv[command.argv.index("--socket") + 1], folder)
                )
                assert proc.stdout is not None
                first = proc.stdout.readline()
                ran = dx.Ran(command, 0, first)
            else:
                ran = dx.run_command(command, folder)
            assert ran.problem() is None, f"{block.where}: {ran.problem()}"
        return
    assert block.lang == "python", f"{block.where}: run host is for sh and python blocks"
    if serves:
        script = folder / f"block{block.line}.py"
        script.write_text(text)
        where = paths[serves]
        with _background([sys.executable, str(script)], where, folder):
            import pyvfio

            with pyvfio.open(f"vfio-user:{where}") as dev:  # it serves: a client gets its BAR
                dev.config.read16(0)
                dev.bar(0).read32(0)
        return
    with _edu_servers(servers):
        dx.run_python(text, {"__name__": "__main__"}, block.where)


HOST_DOCS = sorted({b.path for b in dx.iter_marked("run", "host")})


@pytest.mark.parametrize("doc", HOST_DOCS, ids=[p.name for p in HOST_DOCS])
def test_the_run_host_examples_of_a_doc_run_in_order(doc: Path) -> None:
    """A doc's blocks share a session: vfio-user.md's `pyvfio serve` serves its Python."""
    folder = Path(tempfile.mkdtemp(prefix="docs-", dir="/tmp"))  # short: a socket path
    try:
        with contextlib.ExitStack() as stack:
            for block in dx.blocks(doc):
                if block.marker and block.marker.kind == "run" and block.marker.where == "host":
                    _run_host_block(block, folder, stack)
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


# -- output samples ------------------------------------------------------------------------


@pytest.fixture
def q35(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimulatedKernel:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    return q35_lab(tmp_path / "q35")


def granted_output(q35: SimulatedKernel, monkeypatch: pytest.MonkeyPatch, *flags: str) -> str:
    """What ``pyvfio grant 0000:00:10.0 --user nobody`` prints on the lab's tree, whose
    root stands for /."""
    q35.host.bind("0000:00:10.0", "vfio-pci")
    for rel, mode in (("dev/vfio/2", 0o600), ("dev/vfio/vfio", 0o666)):
        node = q35.path(rel)
        node.parent.mkdir(parents=True, exist_ok=True)
        node.write_bytes(b"")
        os.chmod(node, mode)
    monkeypatch.setattr(grant, "grant", functools.partial(grant.grant, sysfs=q35))
    done = runner.invoke(app, ["grant", "0000:00:10.0", "--user", "nobody", *flags])
    assert done.exit_code == 0, done.output
    return done.stdout.replace(str(q35.root), "")


def _cli_on(q35: SimulatedKernel, *args: str) -> str:
    done = runner.invoke(app, [*args, "--root", str(q35.root)])
    assert done.exit_code == 0, done.output
    return done.stdout


def _journal(q35: SimulatedKernel, tmp_path: Path) -> str:
    plan = bind.plan_bind(["0000:00:11.0"], sysfs=q35)
    bind.bind_devices(plan, sysfs=q35, force=True)
    return (tmp_path / "state" / "journal.json").read_text()


def _unsafe_noiommu(q35: SimulatedKernel) -> str:
    q35.host.bind("0000:00:10.0", "vfio-pci")
    q35.host.write("sys/kernel/iommu_groups/2/name", "vfio-noiommu\n")
    with pytest.raises(UnsafeNoIommuError) as err:
        Iommu(sysfs=q35).open("0000:00:10.0")
    return f"{type(err.value).__name__}: {err.value}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


#: How each sample of the docs is produced on the host, and compared: (produce, compare).
Produce = Callable[[SimulatedKernel, pytest.MonkeyPatch, Path], str]
Compare = Callable[[str, str], bool]


def _as_json(sample: str, real: str) -> bool:
    return dx.json_matches(json.loads(sample), json.loads(real))


SAMPLES: dict[str, tuple[Produce, Compare]] = {
    "ls-json": (lambda q, m, t: _cli_on(q, "ls", "--json"), _as_json),
    "show-json": (lambda q, m, t: _cli_on(q, "show", "0000:01:00.0", "--json"), _as_json),
    "journal": (lambda q, m, t: _journal(q, t), _as_json),
    "grant-text": (lambda q, m, t: granted_output(q, m), lambda s, r: s == r),
    "grant-json": (lambda q, m, t: granted_output(q, m, "--json"), _as_json),
    "unsafe-noiommu": (
        lambda q, m, t: _unsafe_noiommu(q),
        lambda s, r: _one_line(s) == _one_line(r),
    ),
}


def test_every_output_sample_has_a_producer() -> None:
    named = {b.marker.name for b in dx.iter_marked("output") if b.marker}
    assert named == set(SAMPLES) | dx.LAB_SAMPLES


OUTPUTS = [b for b in dx.iter_marked("output") if b.marker and b.marker.name in SAMPLES]


@pytest.mark.parametrize("block", OUTPUTS, ids=[str(b.marker.name) for b in OUTPUTS if b.marker])
def test_an_output_sample_is_what_the_command_prints(
    block: Block, q35: SimulatedKernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert block.marker is not None and block.marker.name is not None
    produce, compare = SAMPLES[block.marker.name]
    real = produce(q35, monkeypatch, tmp_path)
    assert compare(block.text, real), (
        f"{block.where} shows\n{block.text}\nthe command prints\n{real}"
    )


def test_the_grant_sample_says_mib_and_the_limits_in_kib_and_bytes() -> None:
    """The sample once said 64 KiB, `memlock 64` and LimitMEMLOCK=65536 (issue 19)."""
    (sample,) = [
        b.text for b in dx.iter_marked("output") if b.marker and b.marker.name == "grant-text"
    ]
    assert "64 MiB" in sample and "nobody soft memlock 65536" in sample
    assert "LimitMEMLOCK=67108864" in sample
