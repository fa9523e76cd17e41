"""The shell-file reader pyvfio persist uses, checked against bash itself.

Every readable case is sourced by bash too, and the reader must find exactly what bash
has; every unreadable case must be refused with the line named (the reader never runs
anything, so where bash would need to, it says so instead of guessing).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pyvfio.host import kcmdline
from pyvfio.vm import shellconf

BASH = shutil.which("bash")
NAMES = ("MODULES", "FILES", "CMDLINE")

#: (id, text): the reader must agree with bash on MODULES, FILES and CMDLINE.
READABLE = [
    ("empty", ""),
    ("plain", 'CMDLINE="quiet splash"\n'),
    ("comment-after", 'CMDLINE="quiet resume=UUID=1f2e" # hibernate\n'),
    ("single-quotes", "CMDLINE='quiet acpi_osi=\"Windows 2015\"'\n"),
    ("unquoted", "CMDLINE=quiet\n"),
    ("mixed-quotes", "CMDLINE=\"a b\"'c d'e\\ f\n"),
    ("escapes-in-double", 'CMDLINE="a \\"b\\" \\$c \\\\d \\e"\n'),
    ("continuation-in-quotes", 'CMDLINE="quiet \\\nsplash"\n'),
    ("newline-in-quotes", 'CMDLINE="quiet\n  splash"\n'),
    ("self-extending", 'CMDLINE="quiet"\nCMDLINE="$CMDLINE splash"\nCMDLINE="${CMDLINE} x=1"\n'),
    ("plus-equals", 'CMDLINE="quiet"\nCMDLINE+=" splash"\n'),
    ("export", 'export CMDLINE="quiet"\nexport CMDLINE\n'),
    ("other-var-known", 'EXTRA="iommu=pt"\nCMDLINE="quiet $EXTRA"\n'),
    ("two-on-a-line", 'CMDLINE="a"; MODULES=(b)\n'),
    ("no-newline-at-end", 'CMDLINE="quiet"'),
    ("dollar-alone", 'CMDLINE="cost=$ 5"\n'),
    ("hash-inside-word", "CMDLINE=a#b\n"),
    ("array-one-line", "MODULES=(btrfs amdgpu)\n"),
    ("array-empty", "MODULES=()\nFILES=()\n"),
    (
        "array-multiline-comments",
        "MODULES=(\n    btrfs   # root\n    \"amdgpu\" # gpu\n    'nvme'\n)\n",
    ),
    ("array-trailing-comment", "FILES=(/crypto_keyfile.bin) # LUKS keyfile\n"),
    ("array-continuation", "MODULES=(btrfs \\\n  amdgpu)\n"),
    ("array-plus", "MODULES=(a)\nMODULES+=(b c)\n"),
    ("array-extend-front", 'MODULES=(a b)\nMODULES=(v "${MODULES[@]}")\n'),
    ("array-extend-back", 'FILES=(/x)\nFILES=("${FILES[@]}" /y)\n'),
    ("array-unquoted-expansion", "MODULES=(a b)\nMODULES=(${MODULES[@]} c)\n"),
    ("array-element-with-space", 'FILES=("/a b" c)\nFILES=("${FILES[@]}" d)\n'),
    ("array-from-string", 'X="p q"\nMODULES=($X r)\n'),
    ("array-glob-kept-literal-when-quoted", "FILES=('/etc/*.conf')\n"),
    ("string-plus-array", 'MODULES="a"\nMODULES+=(b)\n'),
    ("legacy-strings", 'MODULES="ext4 vfio-pci"\nFILES=""\n'),
    ("other-commands", 'echo hi >/dev/null\nX=$(true)\nCMDLINE="q"\n[ -n "$X" ] || Y=1\n'),
    ("redirections", 'CMDLINE="q" &>/dev/null\nMODULES=(a) 2>&1 >>/dev/null\n'),
    (
        "if-not-touching",
        'if [ -x /sbin/upstart ]; then\n\tINIT=/sbin/upstart\nelse\n\tINIT=\nfi\nCMDLINE="q"\n',
    ),
    ("case-not-touching", 'case "$1" in\n  a) Y=1 ;;\n  (b|c) Y=2 ;;\nesac\nCMDLINE=q\n'),
    (
        "function-not-touching",
        'f() {\n  Y=1\n}\nfunction g { Z=2; }\nfunction h() {\n Z=3\n}\nCMDLINE="q"\n',
    ),
    ("subshell-not-touching", '( cd /tmp; Y=1 )\nCMDLINE="q"\n'),
    ("heredoc", "cat >/dev/null <<EOF\nMODULES=(not this)\nEOF\nMODULES=(this)\n"),
    ("heredoc-quoted-tabs", "cat >/dev/null <<-'END'\n\tCMDLINE=no\n\tEND\nCMDLINE=yes\n"),
    ("backticks-elsewhere", "D=`lsb_release -i -s 2> /dev/null || echo Debian`\nCMDLINE=q\n"),
    ("command-substitution-nested", 'D="$(echo "$(echo x)")"\nCMDLINE=q\n'),
    ("parameter-expansion-elsewhere", 'D="${NAME:-Ubuntu}"\nCMDLINE=q\n'),
]

#: (id, text, fragment): the reader must refuse, naming the line.
UNREADABLE = [
    ("command-substitution", 'CMDLINE="quiet $(cat /x)"\n', "line 1: the value of CMDLINE"),
    ("backticks", "CMDLINE=`cat /x`\n", "($`cat /x`)".replace("$", "")),
    ("unknown-variable", 'CMDLINE="$EXTRA"\n', "(${EXTRA})"),
    ("variable-set-by-command", 'X=$(cat /x)\nCMDLINE="$X"\n', "line 2"),
    ("parameter-expansion", 'CMDLINE="${CMDLINE:-quiet}"\n', "${CMDLINE:-quiet}"),
    ("positional", 'CMDLINE="$1"\n', "($1)"),
    ("in-if", 'if true; then\n  CMDLINE="x"\nfi\n', "line 2: CMDLINE is set inside if"),
    ("in-if-one-line", "if true; then MODULES=(a); fi\n", "line 1: MODULES is set inside"),
    ("after-and", "[ -f /x ] && MODULES=(a)\n", "after && or ||"),
    ("after-or", "false || MODULES=(a)\n", "after && or ||"),
    ("in-pipeline", "MODULES=(a) | cat\n", "in a subshell"),
    ("in-background", "MODULES=(a) &\n", "in a subshell"),
    ("in-case", "case x in\n  x) MODULES=(a) ;;\nesac\n", "line 2"),
    ("in-function", "f() {\n  MODULES=(a)\n}\n", "line 2: MODULES is set inside"),
    ("in-function-keyword", "function f {\n  MODULES=(a)\n}\n", "line 2: MODULES is set inside"),
    ("in-function-keyword-parens", "function f() {\n  CMDLINE=a\n}\n", "line 2: CMDLINE is set"),
    ("in-loop", "for m in a b; do\n  MODULES+=($m)\ndone\n", "line 2"),
    ("in-subshell", "(MODULES=(a))\n", "in a subshell"),
    ("prefix-of-a-command", "CMDLINE=x true\n", "CMDLINE is set for one command only"),
    ("unset", "unset MODULES\n", "MODULES is changed by a command (unset)"),
    ("declare", "declare -a MODULES=(a)\n", "changed by a command (declare)"),
    ("read", "read -r CMDLINE </etc/x\n", "changed by a command (read)"),
    ("element-assignment", "MODULES[0]=a\n", "changed by a command"),
    ("source", ". /etc/other.conf\n", "'.' runs other code"),
    ("source-word", "source /etc/other.conf\n", "'source' runs other code"),
    ("eval", 'eval "CMDLINE=x"\n', "'eval' runs other code"),
    ("quote-not-closed", 'CMDLINE="quiet\n', 'line 1: the " opened on line 1 is not closed'),
    ("single-not-closed", "CMDLINE='quiet\nX=1\n", "the ' opened on line 1 is not closed"),
    ("array-not-closed", "MODULES=(a\n b\n", "the array opened on line 1 is not closed"),
    ("ends-in-continuation", "CMDLINE=quiet \\\n", "ends in a line continuation"),
    ("ends-in-backslash", "CMDLINE=quiet\\", "ends in a backslash"),
    ("heredoc-not-closed", "cat <<EOF\nMODULES=(a)\n", "never ends"),
    ("if-not-closed", "if true; then\n  X=1\n", "is not closed"),
    ("fi-without-if", "X=1\nfi\n", "'fi' without its opening keyword"),
    ("array-string-element-glued", 'MODULES=(a)\nMODULES=(x"${MODULES[@]}")\n', "line 2"),
    ("ansi-c-quote", "CMDLINE=$'quiet\\n'\n", "($'quiet\\n')"),
    ("string-onto-array", 'MODULES=(a)\nMODULES+=" b"\n', "line 2"),
    ("command-substitution-not-closed", 'X="$(echo\n', "not closed"),
]


def read(text: str) -> shellconf.Env:
    env = shellconf.Env(frozenset(NAMES))
    env.source("f.conf", text)
    return env


def bash_values(tmp_path: Path, text: str) -> dict[str, tuple[str, ...] | str | None]:
    assert BASH is not None
    path = tmp_path / "f.conf"
    path.write_text(text)
    script = (
        'set -e\n. "$1"\n'
        "for n in " + " ".join(NAMES) + "; do\n"
        '  declare -n v=$n\n  if [[ ${v@a} == *a* ]]; then printf "%s\\0a\\0%s\\0" $n ${#v[@]}; '
        '(( ${#v[@]} )) && printf "%s\\0" "${v[@]}"; :\n'
        '  elif [[ -v $n ]]; then printf "%s\\0s\\0%s\\0" $n "$v"\n'
        '  else printf "%s\\0u\\0" $n; fi\n'
        "  unset -n v\ndone\n"
    )
    done = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", script, "bash", str(path)],
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr.decode()
    fields = done.stdout.decode().split("\0")
    out: dict[str, tuple[str, ...] | str | None] = {}
    i = 0
    while i < len(fields) - 1:
        name, kind = fields[i], fields[i + 1]
        if kind == "a":
            count = int(fields[i + 2])
            out[name] = tuple(fields[i + 3 : i + 3 + count])
            i += 3 + count
        elif kind == "s":
            out[name] = fields[i + 2]
            i += 3
        else:
            out[name] = None
            i += 2
    return out


@pytest.mark.needs_tool("bash")  # compares with bash
@pytest.mark.parametrize(("case", "text"), READABLE, ids=[c for c, _ in READABLE])
def test_the_reader_agrees_with_bash(case: str, text: str, tmp_path: Path) -> None:
    env = read(text)
    want = bash_values(tmp_path, text)
    for name in NAMES:
        got = env.values.get(name)
        assert got == want[name], (name, got, want[name])
    shellconf.check_complete(text)


@pytest.mark.parametrize(("case", "text", "match"), UNREADABLE, ids=[c for c, _, _ in UNREADABLE])
def test_the_reader_refuses_what_only_running_would_tell(case: str, text: str, match: str) -> None:
    with pytest.raises(shellconf.ShellReadError) as caught:
        read(text)
    assert match in str(caught.value)
    assert str(caught.value).startswith("f.conf line ")


def test_origins_tell_an_extension_from_a_replacement() -> None:
    env = read('CMDLINE="a"\nCMDLINE="$CMDLINE b"\nCMDLINE+=" c"\nCMDLINE="d"\n')
    assert [(o.line, o.keeps_earlier) for o in env.origins["CMDLINE"]] == [
        (1, False),
        (2, True),
        (3, True),
        (4, False),
    ]


#: (id, command line, amd, options to add, the word that keeps the IOMMU off, kept)
REVIEWS = [
    ("nothing", "quiet", False, ("intel_iommu=on", "iommu=pt"), None, None),
    ("nothing-amd", "quiet", True, ("iommu=pt",), None, None),
    ("on-with-igfx-off", "intel_iommu=on,igfx_off", False, ("iommu=pt",), None, None),
    ("igfx-off-only", "intel_iommu=igfx_off", False, ("intel_iommu=on", "iommu=pt"), None, None),
    ("sm-on-then-on", "intel_iommu=sm_on intel_iommu=on iommu=pt", False, (), None, None),
    ("off", "quiet intel_iommu=off", False, (), "intel_iommu=off", None),
    ("off-in-a-list", "intel_iommu=igfx_off,off", False, (), "intel_iommu=igfx_off,off", None),
    ("off-then-on", "intel_iommu=off intel_iommu=on", False, ("iommu=pt",), None, None),
    ("on-then-off", "intel_iommu=on intel_iommu=off", False, (), "intel_iommu=off", None),
    ("intel-off-on-amd", "intel_iommu=off", True, ("iommu=pt",), None, None),
    ("amd-off", "amd_iommu=off", True, (), "amd_iommu=off", None),
    ("amd-off-on-intel", "amd_iommu=off", False, ("intel_iommu=on", "iommu=pt"), None, None),
    ("iommu-off", "iommu=off", True, (), "iommu=off", None),
    ("iommu-soft", "iommu=soft", True, ("iommu=pt",), None, None),
    ("pt-in-a-list", "iommu=force,pt", True, (), None, None),
    ("nopt-kept", "iommu=nopt", False, ("intel_iommu=on",), None, "iommu=nopt"),
    ("passthrough-0", "iommu.passthrough=0", True, (), None, "iommu.passthrough=0"),
    ("passthrough-1", "iommu.passthrough=1", True, (), None, None),
    ("vfio-ids-untouched", "vfio-pci.ids=10de:1b80,10de:10f0", True, ("iommu=pt",), None, None),
    ("quoted-value", 'acpi_osi="Windows 2015" intel_iommu=on', False, ("iommu=pt",), None, None),
]


@pytest.mark.parametrize(
    ("case", "line", "amd", "add", "off", "kept"), REVIEWS, ids=[r[0] for r in REVIEWS]
)
def test_kernel_options_reviewed(
    case: str, line: str, amd: bool, add: tuple[str, ...], off: str | None, kept: str | None
) -> None:
    review = kcmdline.review(kcmdline.split(line), amd)
    assert (review.add, review.off, review.kept) == (add, off, kept)


def test_split_keeps_quoted_spaces() -> None:
    assert kcmdline.split(" a  b=\"c d\" 'e f'\n") == ["a", 'b="c d"', "'e f'"]
