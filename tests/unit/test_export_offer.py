"""What a node offers: one device per viable IOMMU group, refused with the reason otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from export_hosts import (
    gpu_and_audio,
    lab_edu_bound,
    lab_snapshot,
    pf_sharing_its_group,
    sriov_pf,
    sriov_vfs,
)
from pyvfio.cli import app
from pyvfio.fleet import nova
from pyvfio.fleet.offer import Selection, plan
from pyvfio.testing import amd_desktop

runner = CliRunner()
GPU = Selection(classes=((0x03,),), text="--class gpu")
ALL = Selection(all_bound=True, text="--all-bound")


def refused(args: list[str]) -> str:
    """The one line a refused export prints (exit 2, nothing on stdout)."""
    done = runner.invoke(app, args)
    assert done.exit_code == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_gpu_and_its_audio_function_are_one_offer(tmp_path: Path) -> None:
    offers = plan(ALL, gpu_and_audio(tmp_path)).offers
    assert [(o.address, o.group, o.companions) for o in offers] == [
        ("0000:0a:00.0", 13, ("0000:0a:00.1",))
    ]
    assert offers[0].kind == "pci" and offers[0].physical_function is None


def test_a_gpu_whose_audio_function_is_on_its_driver_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    host = gpu_and_audio(tmp_path, audio="snd_hda_intel")
    for engine in ("nova", "kubevirt"):
        line = refused(["export", engine, "--device", "0a:00.0", "--root", str(host.root)])
        assert line == (
            "error: 0000:0a:00.0 cannot be offered: IOMMU group 13 of 0000:0a:00.0 is not "
            "viable: 0000:0a:00.1 (snd_hda_intel); bind them to vfio-pci or unbind them "
            "(pyvfio bind --group 0000:0a:00.0)"
        )


def test_a_filter_that_finds_only_non_viable_groups_says_why(tmp_path: Path) -> None:
    host = amd_desktop(tmp_path)  # the GPU on nouveau, the audio on snd_hda_intel
    line = refused(["export", "nova", "--class", "gpu", "--root", str(host.root)])
    assert line.startswith("error: nothing to offer for --class gpu: 0000:0a:00.0: IOMMU group 13")
    assert "0000:0a:00.0 (nouveau), 0000:0a:00.1 (snd_hda_intel)" in line


def test_vfs_sharing_their_pfs_group_are_not_offered(tmp_path: Path) -> None:
    host = pf_sharing_its_group(tmp_path)
    line = refused(["export", "nova", "--all-bound", "--root", str(host.root)])
    assert line.startswith("error: nothing to offer for --all-bound: 0000:5e:02.0: IOMMU group 40")
    assert "0000:5e:00.0 (i40e)" in line and "0000:5e:02.1: IOMMU group 40" in line
    line = refused(["export", "kubevirt", "--device", "5e:02.1", "--root", str(host.root)])
    assert "0000:5e:02.1 cannot be offered: IOMMU group 40 of 0000:5e:02.1 is not viable" in line


def test_a_filter_skips_what_it_cannot_offer_and_says_so(tmp_path: Path) -> None:
    host = sriov_vfs(tmp_path)  # the PF stays on igb, its group not viable
    result = plan(Selection(ids=((0x8086, None),), text="--vendor 8086"), host)
    assert [o.address for o in result.offers] == ["0000:00:02.1", "0000:00:02.2", "0000:04:00.0"]
    assert [(s.address, s.group) for s in result.skipped] == [("0000:00:02.0", 4)]
    assert "0000:00:02.0 (igb)" in result.skipped[0].reason
    done = runner.invoke(app, ["export", "nova", "--vendor", "8086", "--root", str(host.root)])
    assert done.exit_code == 0
    assert "# skipped 0000:00:02.0: IOMMU group 4 of 0000:00:02.0 is not viable" in done.stdout
    assert done.stderr.startswith("skipped 0000:00:02.0")


def test_sriov_kinds_as_nova_reads_them(tmp_path: Path) -> None:
    vfs = plan(ALL, sriov_vfs(tmp_path / "vfs")).offers
    assert {(o.address, o.kind, o.physical_function) for o in vfs} == {
        ("0000:00:02.1", "vf", "0000:00:02.0"),
        ("0000:00:02.2", "vf", "0000:00:02.0"),
        ("0000:03:00.0", "pci", None),  # the switch's group: 04:00.0 goes with it
    }
    (pf,) = plan(ALL, sriov_pf(tmp_path / "pf")).offers
    assert (pf.address, pf.kind) == ("0000:00:02.0", "pf")


def test_a_pf_and_its_vf_are_never_offered_to_nova_together(tmp_path: Path) -> None:
    host = sriov_vfs(tmp_path)
    host.host.bind("0000:00:02.0", "vfio-pci")  # now the PF's group is viable too
    selection = Selection(devices=("00:02.0", "00:02.1"), text="--device ...")
    with pytest.raises(ValueError, match=r"0000:00:02.0 is selected with its VF 0000:00:02.1"):
        nova.export(plan(selection, host))


def test_named_things_that_cannot_be_offered_are_refused(tmp_path: Path) -> None:
    lab = lab_snapshot()
    root = str(tmp_path / "missing")
    cases = {
        ("--all-bound",): "error: no device matches --all-bound (pyvfio ls shows",
        ("--device", "00:10.0"): "error: 0000:00:10.0 cannot be offered: not bound to any "
        "driver, not vfio-pci: bind it first (pyvfio bind --group 0000:00:10.0)",
        ("--device", "00:18.0"): "error: 0000:00:18.0 cannot be offered: a PCI bridge",
        ("--device", "00:1f.2"): "error: 0000:00:1f.2 cannot be offered: IOMMU group 14 "
        "of 0000:00:1f.2 is not viable: 0000:00:1f.0 (lpc_ich), 0000:00:1f.2 (ahci)",
        ("--device", "0a:00.0"): "error: no PCI device 0000:0a:00.0 on this host",
        ("--group", "99"): "error: no IOMMU group 99 on this host",
        ("--ids", "8086"): "error: --ids '8086': write VENDOR:DEVICE in hex",
        ("--class", "fpga"): "error: unknown class 'fpga': use one of gpu, nvme, net",
        (): "error: choose what to offer: --device BDF, --group N",
    }
    for args, start in cases.items():
        line = refused(["export", "nova", *args, "--root", str(lab.root)])
        assert line.startswith(start), (args, line)
    assert "no snapshot at" in refused(["export", "kubevirt", "--all-bound", "--root", root])


def test_the_lab_guest_offers_its_edu_devices_once_bound(tmp_path: Path) -> None:
    result = plan(ALL, lab_edu_bound(tmp_path))
    assert [(o.address, o.group, o.companions) for o in result.offers] == [
        ("0000:00:10.0", 2, ()),
        ("0000:04:00.0", 8, ()),  # behind the switch: its ports are bridges, not companions
    ]


def test_same_input_same_output(tmp_path: Path) -> None:
    host = sriov_vfs(tmp_path)
    for engine in ("nova", "kubevirt"):
        for extra in ([], ["--json"]):
            args = ["export", engine, "--all-bound", *extra, "--root", str(host.root)]
            first, second = runner.invoke(app, args), runner.invoke(app, args)
            assert first.exit_code == 0 and first.stdout == second.stdout
    # The order the user names things in changes nothing.
    a = plan(Selection(devices=("00:02.2", "00:02.1")), host)
    b = plan(Selection(devices=("00:02.1", "0000:00:02.2")), host)
    assert a == b and [o.address for o in a.offers] == ["0000:00:02.1", "0000:00:02.2"]


def test_a_gpu_filter_with_no_gpu_on_vfio(tmp_path: Path) -> None:
    result = plan(GPU, gpu_and_audio(tmp_path))
    assert [o.address for o in result.offers] == ["0000:0a:00.0"]
