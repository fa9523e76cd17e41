"""``pyvfio lab ...``: boot the VM lab, run commands in it."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pyvfio.cli.common import JsonOpt, err_console, handle_errors, lab_app, print_json

#: The options that choose the lab's guest, for every command that boots it.
DeviceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--device", "-d", help="NAME[@PLACE]: edu|nvme|e1000e @ root|rootport|switch|numa1"
    ),
]
KernelOpt = Annotated[
    str | None, typer.Option(help="stock (default), iommufd (built on first use) or a bzImage")
]
AccelOpt = Annotated[str | None, typer.Option(help="kvm or tcg (default: probe)")]
IommuOpt = Annotated[
    str,
    typer.Option(
        "--iommu",
        help="the guest's vIOMMU: intel (intel-iommu), amd (amd-iommu) or virtio "
        "(virtio-iommu-pci, needs --kernel iommufd)",
    ),
]


@lab_app.command("run", context_settings={"allow_interspersed_args": False})
@handle_errors
def lab_run(
    command: Annotated[
        list[str], typer.Argument(metavar="COMMAND", help="command to run in the guest")
    ],
    device: DeviceOpt = None,
    kernel: KernelOpt = None,
    accel: AccelOpt = None,
    iommu: IommuOpt = "intel",
    no_viommu: Annotated[bool, typer.Option("--no-viommu", help="no vIOMMU at all")] = False,
    no_intremap: Annotated[
        bool, typer.Option("--no-intremap", help="a vIOMMU without interrupt remapping")
    ] = False,
    no_iommu_cmdline: Annotated[
        bool, typer.Option("--no-intel-iommu", help="boot without intel_iommu=on")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds before the guest is killed")] = 1800,
) -> None:
    """Boot the lab and run COMMAND as root inside.

    Example: pyvfio lab run -d edu -- lspci -nn
    """
    from pyvfio.lab.runner import interrupt_on_sigterm, run
    from pyvfio.lab.topology import Topology

    if not timeout > 0:
        raise ValueError(f"--timeout {timeout}: give the seconds the guest may run, above 0")

    topology = Topology(
        devices=tuple(device or ("edu",)),
        viommu=not no_viommu,
        intremap=not no_intremap,
        iommu_cmdline=not no_iommu_cmdline,
        iommu=iommu,
    )
    with interrupt_on_sigterm():  # a SIGTERM stops the guest too, as Ctrl-C does
        result = run(
            command,
            topology,
            kernel=kernel,
            accel=accel,
            timeout=timeout,
            on_output=lambda line: print(line, flush=True),
            on_progress=_progress,
            log_name=f"run-{topology.name}",
        )
    _progress(f"lab: {result.summary()}")
    raise typer.Exit(result.returncode)


def _progress(line: str) -> None:
    # Plain print: kernel text in a line ("[    0.000000]") is not rich markup.
    print(line, file=sys.stderr, flush=True)


@lab_app.command("shell")
@handle_errors
def lab_shell(
    device: DeviceOpt = None,
    kernel: KernelOpt = None,
    accel: AccelOpt = None,
    iommu: IommuOpt = "intel",
) -> None:
    """Boot the lab with an interactive root shell.

    Example: pyvfio lab shell -d edu -d nvme
    """
    from pyvfio.lab.runner import shell
    from pyvfio.lab.topology import Topology

    topology = Topology(devices=tuple(device or ("edu",)), iommu=iommu)
    raise typer.Exit(shell(topology, kernel=kernel, accel=accel))


@lab_app.command("accel")
@handle_errors
def lab_accel() -> None:
    """Say whether KVM works here or the lab falls back to TCG, and why.

    Example: pyvfio lab accel
    """
    from pyvfio.lab.accel import kvm_usable

    works, why = kvm_usable()
    print("kvm" if works else f"tcg ({why})")


@lab_app.command("sid-qemu")
@handle_errors
def lab_sid_qemu(
    force: Annotated[bool, typer.Option(help="rebuild even if the chroot is cached")] = False,
    mirror: Annotated[
        str | None, typer.Option(help="Debian mirror (default: the one apt uses here)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build (when missing) the sid chroot whose QEMU is a vfio-user client; print it.

    Example: pyvfio lab sid-qemu --json
    """
    from pyvfio.lab.sid_qemu import ensure_chroot

    chroot = ensure_chroot(
        mirror=mirror, force=force, say=lambda line: err_console.print(line, highlight=False)
    )
    if as_json:
        print_json(chroot.to_json())
    else:
        print(chroot)
