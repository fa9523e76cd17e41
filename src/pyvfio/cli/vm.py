"""VM commands: ``pyvfio vm qemu``, ``pyvfio vm libvirt`` and ``pyvfio persist``.

Each is a few lines over :mod:`pyvfio.vm`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pyvfio.cli.common import JsonOpt, RootOpt, app, handle_errors, print_json

vm_app = typer.Typer(
    help="Pass devices through to a VM: QEMU and libvirt.\n\n"
    "Example: pyvfio vm qemu 0000:01:00.0 --check",
    no_args_is_help=True,
)
app.add_typer(vm_app, name="vm")


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """``BDF... -- EXTRA``: click hands both over as one list; QEMU options start with '-'."""
    for n, arg in enumerate(args):
        if arg.startswith("-"):
            return args[:n], args[n:]
    return args, []


@vm_app.command("qemu")
@handle_errors
def qemu(
    args: Annotated[
        list[str] | None,
        typer.Argument(metavar="BDF", help="PCI addresses, then -- and extra QEMU arguments"),
    ] = None,
    memory: Annotated[
        str | None, typer.Option(help="guest RAM, e.g. 4G (default 4G; 64M with --check)")
    ] = None,
    hugepages: Annotated[bool, typer.Option("--hugepages", help="guest RAM on hugepages")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the argv, run nothing")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="start QEMU, confirm over QMP, stop: yes or no")
    ] = False,
    accel: Annotated[str, typer.Option(help="kvm, tcg, or auto (KVM, else TCG)")] = "auto",
    x_vga: Annotated[bool, typer.Option("--x-vga", help="GPU: legacy VGA ranges")] = False,
    romfile: Annotated[str | None, typer.Option(help="GPU: ROM image to expose")] = None,
    rombar: Annotated[bool, typer.Option(help="GPU: expose the ROM BAR")] = True,
    run_as: Annotated[
        str | None,
        typer.Option(
            help="user QEMU becomes once its devices are open (default nobody); 'root' keeps root"
        ),
    ] = None,
    sandbox: Annotated[
        bool, typer.Option(help="QEMU's seccomp filter (-sandbox on), where QEMU has it")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds for QEMU to answer on QMP")] = 120.0,
    vf_token: Annotated[
        str | None,
        typer.Option(help="SR-IOV: the VF token for VFs whose PF is on vfio-pci (a UUID)"),
    ] = None,
    as_json: JsonOpt = False,
    root: RootOpt = "/",
) -> None:
    """QEMU (q35) with the devices passed through: print it, check it, or run it (managed).

    Example: pyvfio vm qemu 0000:01:00.0 --memory 8G -- -cdrom debian.iso
    """
    from pyvfio.host.snapshot import open_root
    from pyvfio.vm import qemu as q

    addresses, extra = _split(args or [])
    if not addresses:  # one line instead of click's "Missing argument 'args'"
        raise ValueError(
            "name the devices to pass through: pyvfio vm qemu BDF... [-- QEMU ARGS], "
            "e.g. pyvfio vm qemu 0000:01:00.0 --check"
        )
    sysfs = open_root(root)
    if not sysfs.is_live and not dry_run:  # before build: nothing probed for a refusal
        raise ValueError("--root reads a snapshot: only --dry-run works on one")
    gpu = q.GpuOptions(x_vga=x_vga, romfile=romfile, rombar=rombar)
    plan = q.build(
        addresses,
        memory=memory,
        hugepages=hugepages,
        accel=accel,
        gpu=gpu,
        extra=extra,
        check=check,
        run_as=run_as,
        sandbox=sandbox,
        vf_token=vf_token,
        sysfs=sysfs,
    )
    if dry_run:
        if as_json:
            print_json(plan.to_json())
        else:
            typer.echo(str(plan))
        return
    report = q.run(plan, check=check, timeout=timeout, echo_stderr=not check and not as_json)
    if as_json:
        print_json(report.to_json())
    else:
        typer.echo(str(report))
    if report.interrupted:  # the shell's status for a command ended by SIGINT
        raise typer.Exit(130)
    if not report.ok:
        raise typer.Exit(1)


@vm_app.command("libvirt")
@handle_errors
def libvirt(
    addresses: Annotated[
        list[str], typer.Argument(metavar="BDF", help="PCI addresses, e.g. 0000:01:00.0")
    ],
    domain: Annotated[
        str | None, typer.Option(help="print a whole minimal q35 domain of this name")
    ] = None,
    memory: Annotated[str, typer.Option(help="guest RAM (with --domain)")] = "4G",
    hugepages: Annotated[bool, typer.Option("--hugepages", help="guest RAM on hugepages")] = False,
    romfile: Annotated[str | None, typer.Option(help="GPU: ROM image to expose")] = None,
    rombar: Annotated[bool, typer.Option(help="GPU: expose the ROM BAR")] = True,
    root: RootOpt = "/",
) -> None:
    """libvirt <hostdev managed='yes'> elements, or with --domain a whole q35 domain.

    Example: pyvfio vm libvirt 0000:01:00.0 --domain gpu-vm
    """
    from pyvfio.host.snapshot import open_root
    from pyvfio.vm import libvirt as lv
    from pyvfio.vm.qemu import GpuOptions

    sysfs = open_root(root)
    gpu = GpuOptions(romfile=romfile, rombar=rombar)
    if domain is None:
        typer.echo(lv.hostdevs(addresses, gpu=gpu, sysfs=sysfs), nl=False)
    else:
        text = lv.domain(
            addresses, domain, memory=memory, hugepages=hugepages, gpu=gpu, sysfs=sysfs
        )
        typer.echo(text, nl=False)


@app.command("persist")
@handle_errors
def persist(
    addresses: Annotated[
        list[str] | None,
        typer.Argument(metavar="BDF", help="PCI addresses to bind to vfio-pci at boot"),
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="write the files (with backups); else a diff")
    ] = False,
    undo: Annotated[bool, typer.Option("--undo", help="put back what --apply wrote")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="persist devices bind would refuse (in use by the host, a group left not "
            "viable); with --undo: put the files back even where they changed since",
        ),
    ] = False,
    distro: Annotated[
        str | None, typer.Option(help="debian, fedora or arch (default: /etc/os-release)")
    ] = None,
    root: Annotated[
        str, typer.Option(help="a tree with etc/ (and sys/, proc/) instead of /")
    ] = "/",
    as_json: JsonOpt = False,
) -> None:
    """Make the vfio-pci binding survive reboot: udev rule, softdep, initramfs, cmdline.

    Example: pyvfio persist 0000:01:00.0 --apply
    """
    from pyvfio.host.bind import require_root
    from pyvfio.host.sysfs import Sysfs
    from pyvfio.vm import persist as p

    try:
        if undo:
            if root == "/":
                require_root(Sysfs(root), "undoing persist")
            restored = p.undo(root=root, force=force)
            if as_json:
                print_json({"restored": restored})
            else:
                for path in restored:
                    typer.echo(f"restored {path}")
                typer.echo("now regenerate the initramfs and boot loader configuration again")
            return
        plan = p.plan(addresses or [], root=root, distro=distro, force=force)
        if not apply:
            if as_json:
                print_json({"applied": False, **plan.to_json()})
            else:
                typer.echo(str(plan))
            return
        if root == "/":
            require_root(Sysfs(root), "writing /etc")
        applied = p.apply(plan, root=root)
    except p.PersistRefusedError as err:
        if as_json:  # what a script needs to act on; the one error line still goes to stderr
            print_json({"refused": str(err), "files": list(err.paths)})
        raise
    if as_json:
        print_json({"applied": True, **plan.to_json(), **applied.to_json()})
    else:
        typer.echo(str(applied))
