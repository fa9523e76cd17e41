"""Start-up (issue 19): what ``pyvfio`` imports, and the paths that keep it small.

No timing here (bench/startup.py measures): these check which modules a command
loads, that ``pyvfio ls --json`` answered before typer says exactly what the typer
command says, and that the pci.ids lookups that skip the full parse give its answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pyvfio
from pyvfio.cli import app, plain
from pyvfio.pci import ids
from pyvfio.testing import large_host

runner = CliRunner()

#: Never loaded by ``import pyvfio.cli`` and the typer app: the event loop, the
#: vfio-user client, the lab, the device and ioctl layers, the NVMe driver.
HEAVY = (
    "asyncio",
    "pyvfio.vfio_user.client",
    "pyvfio.lab",
    "pyvfio.device",
    "pyvfio.iommu",
    "pyvfio._ioctl",
    "pyvfio.drivers",
)


def loaded_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh Python; what it then has in sys.modules, and whether the
    whole pci.ids was parsed."""
    probe = (
        "import json, sys\n"
        "def _report():\n"
        "    ids = sys.modules.get('pyvfio.pci.ids')\n"
        "    parsed = ids is not None and ids.system_ids.cache_info().currsize > 0\n"
        "    sys.__stderr__.write('\\nLOADED ' + json.dumps("
        "{'modules': sorted(sys.modules), 'pci_ids_parsed': parsed}) + '\\n')\n"
        "import atexit; atexit.register(_report)\n" + code
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=600
    )
    line = done.stderr.rsplit("\nLOADED ", 1)[1]
    report: dict[str, object] = json.loads(line)
    report["stdout"] = done.stdout
    report["returncode"] = done.returncode
    return report


def heavy_in(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_the_typer_app_loads_neither_rich_nor_the_library_layers() -> None:
    report = loaded_after("from pyvfio.cli import app\napp.registered_commands")
    modules = report["modules"]
    assert isinstance(modules, list)
    assert "typer" in modules and "pyvfio.cli.vm" in modules  # the app is all there
    assert heavy_in(modules) == []
    assert "rich" not in modules
    assert report["pci_ids_parsed"] is False


def test_help_loads_no_library_layer() -> None:
    report = loaded_after(
        "import sys\nsys.argv = ['pyvfio', '--help']\nfrom pyvfio.cli import main\nmain()"
    )
    assert report["returncode"] == 0 and "Usage: pyvfio" in str(report["stdout"])
    assert heavy_in(report["modules"]) == []
    assert report["pci_ids_parsed"] is False


def test_import_pyvfio_loads_only_the_package() -> None:
    report = loaded_after("import pyvfio")
    modules = report["modules"]
    assert isinstance(modules, list)
    assert [m for m in modules if m.startswith("pyvfio")] == ["pyvfio"]
    assert "asyncio" not in modules


def test_ls_json_answers_before_typer_with_names_and_no_full_parse(tmp_path: Path) -> None:
    large_host(tmp_path, 8)
    argv = ["ls", "--json", "--root", str(tmp_path)]
    report = loaded_after(f"import sys\nsys.argv = ['pyvfio', *{argv!r}]\nimport pyvfio.__main__")
    modules = report["modules"]
    assert isinstance(modules, list)
    assert report["returncode"] == 0
    assert [m for m in modules if m.split(".")[0] in ("typer", "rich", "click")] == []
    assert heavy_in(modules) == []
    assert report["pci_ids_parsed"] is False
    assert report["stdout"] == runner.invoke(app, argv).stdout  # what typer's command says
    data = json.loads(str(report["stdout"]))
    names = {d["vendor_name"] for g in data["groups"] for d in g["devices"]}
    if ids.system_ids() is not None:
        assert "Intel Corporation" in names


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("host")
    large_host(root, 24)
    (root / "sys/kernel/iommu_groups/2/name").write_text("vfio-noiommu\n")
    return root


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--group", "3"],
        ["--group=2"],
        ["--group", "99"],
        ["--class", "nvme"],
        ["--class=net", "--vendor", "8086"],
        ["--vendor", "1af4", "--json", "--group", "1", "--group", "0"],
        ["--vendor=ffff"],
    ],
    ids=lambda options: " ".join(options) or "no-filter",
)
def test_the_fast_path_prints_what_the_typer_command_prints(
    tree: Path, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ls", "--json", "--root", str(tree), *options]
    assert plain.fast_ls_json(argv) is True
    fast = capsys.readouterr().out
    done = runner.invoke(app, argv)
    assert done.exit_code == 0
    assert fast == done.stdout
    assert json.loads(fast)["groups"] is not None


@pytest.mark.parametrize(
    "argv",
    [
        ["ls", "--json", "--vendor", "12345"],  # bad input: typer's command says so
        ["ls", "--json", "--class", "gpus"],
        ["ls", "--json", "--root", "/nonexistent/snapshot"],
        ["ls", "--json", "--group", "-1"],
        ["ls", "--json=1"],
        ["ls", "--json", "--help"],
        ["ls", "--json", "--root"],
        ["ls", "--json", "--js"],
        ["ls"],
        ["ls", "--group", "1"],
        ["show", "--json"],
        ["--version"],
        [],
    ],
    ids=lambda argv: " ".join(argv) or "no-arguments",
)
def test_the_fast_path_leaves_everything_else_to_typer(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert plain.fast_ls_json(argv) is False
    assert capsys.readouterr() == ("", "")


def test_the_fast_path_leaves_shell_completion_to_typer(
    tree: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("_PYVFIO_COMPLETE", "complete_bash")
    assert plain.fast_ls_json(["ls", "--json", "--root", str(tree)]) is False
    assert capsys.readouterr().out == ""


def test_every_public_name_of_pyvfio_is_there_on_first_use() -> None:
    import importlib

    for name in pyvfio.__all__:
        module = importlib.import_module(pyvfio._LAZY[name])
        assert getattr(pyvfio, name) is getattr(module, name), name
    assert sorted(pyvfio.__all__) == sorted(pyvfio._LAZY)
    assert set(pyvfio.__all__) <= set(dir(pyvfio))
    with pytest.raises(AttributeError, match="no attribute 'Devic'"):
        pyvfio.Devic  # noqa: B018 - the attribute access is the test


# -- pci.ids without the full parse --------------------------------------------------------

SAMPLE = """\
# pci.ids, with what a damaged or edited copy may hold
0001  First vendor
\t0001  device one
# a comment inside a block
\t0002  device two

\t\t0001 0002  subsystem of two
8086  Intel Corporation
\t10c9  82576 Gigabit Network Connection
\t\t8086 a03c  Gigabit ET Dual Port Server Adapter
\t10c9  82576, named again (the last counts)
\tzzzz  a damaged line
\t1521  I350 Gigabit Network Connection
1af4  Red Hat, Inc.\r
\t1041  Virtio network device\r
0001  First vendor, again
\t0003  device three
C 01  Mass storage controller
\t08  Non-Volatile memory controller
\t\t02  NVM Express
C 06  Bridge
\t04  PCI bridge
\t\t00  Normal decode
\t\t01  Subtractive decode
\t80  Bridge
"""


def test_the_lazy_lookups_answer_as_the_full_parse_on_a_sample(tmp_path: Path) -> None:
    path = tmp_path / "pci.ids"
    path.write_bytes(SAMPLE.encode())
    full, lazy = ids.PciIds.load(path), ids.PciIdsFile.load(path)
    assert lazy.path == path
    assert full.device_name(0x8086, 0x10C9) == "82576, named again (the last counts)"
    for vendor, name in full.vendors.items():
        assert lazy.vendor_name(vendor) == name
    for (vendor, device), name in full.devices.items():
        assert lazy.device_name(vendor, device) == name, (vendor, device)
    for ids4, name in full.subsystems.items():
        assert lazy.subsystem_name(*ids4) == name
    for levels, name in full.classes.items():
        assert lazy.class_name(*levels) == name, levels
    assert lazy.vendor_name(0x1234) is None and lazy.device_name(0x1234, 1) is None
    assert lazy.device_name(0x8086, 0x0001) is None and lazy.device_name(0x0001, 0x10C9) is None
    assert lazy.class_name(0x06, 0x05) is None and lazy.class_name(0x06, 0x04, 0x02) is None
    assert lazy.class_name(0x0C) is None and lazy.subsystem_name(0x8086, 0x10C9, 1, 2) is None


def test_the_lazy_lookups_answer_as_the_full_parse_on_the_system_database() -> None:
    full, lazy = ids.system_ids(), ids.system_names()
    if full is None or lazy is None:
        pytest.skip(f"no pci.ids at {', '.join(map(str, ids.PCI_IDS_PATHS))}")
    assert lazy.path == full.path
    vendors = sorted(full.vendors)[::15]  # a sample spread over the file: each is a search
    chosen = set(vendors)
    for vendor in vendors:
        assert lazy.vendor_name(vendor) == full.vendors[vendor]
    for (vendor, device), name in full.devices.items():
        if vendor in chosen:
            assert lazy.device_name(vendor, device) == name, (vendor, device)
    for levels, name in full.classes.items():
        assert lazy.class_name(*levels) == name, levels
    for ids4, name in list(full.subsystems.items())[::200]:
        assert lazy.subsystem_name(*ids4) == name, ids4
