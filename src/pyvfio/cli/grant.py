"""``pyvfio grant`` / ``pyvfio revoke``: one user may open one device, and then not.

Thin shells over :mod:`pyvfio.host.grant`; both need root and take ``--json``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pyvfio.cli.common import JsonOpt, app, fail, handle_errors, print_json
from pyvfio.cli.host import _parse_size

Address = Annotated[str, typer.Argument(metavar="BDF", help="PCI address of a device on vfio-pci")]
User = Annotated[str, typer.Option("--user", help="user name (or uid) to give it to")]
RevokedUser = Annotated[
    str, typer.Option("--user", help="user name (or uid) whose grant to take back")
]


@app.command("grant")
@handle_errors
def grant(
    address: Address,
    user: User,
    memlock: Annotated[
        str, typer.Option(help="memory the user will map for DMA, e.g. 512M")
    ] = "64M",
    group: Annotated[
        bool, typer.Option("--group", help="accept that the group node opens its other devices")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Let USER open the device through VFIO; say what RLIMIT_MEMLOCK they need.

    An ACL on the device's nodes; 'pyvfio revoke' undoes it.

    Example: pyvfio grant 0000:01:00.0 --user alice --memlock 1G
    """
    from pyvfio.host import grant as g

    result = g.grant(address, user, group=group, memlock=_parse_size(memlock))
    if as_json:
        print_json(result.to_json())
    else:
        typer.echo(str(result))


@app.command("revoke")
@handle_errors
def revoke(
    address: Address,
    user: RevokedUser,
    kill: Annotated[
        bool,
        typer.Option(
            "--kill",
            help="end the user's processes that still hold the device open "
            "(SIGTERM, then SIGKILL): an open fd outlives the ACL",
        ),
    ] = False,
    grace: Annotated[float, typer.Option(help="seconds from SIGTERM to SIGKILL")] = 5.0,
    as_json: JsonOpt = False,
) -> None:
    """Take a grant back: each node gets its recorded owner, mode and ACL back.

    Revoking what was not granted says so and exits 0. A process of the user that still
    holds the device is named (exit 1); --kill ends it.

    Example: pyvfio revoke 0000:01:00.0 --user alice --kill
    """
    from pyvfio.host import grant as g
    from pyvfio.host.usage import describe_holders

    if not 0 <= grace < 1e6:  # also NaN
        raise ValueError(f"--grace {grace}: give the seconds to wait, 0 or more")
    result = g.revoke(address, user, kill=kill, grace=grace)
    if as_json:
        print_json(result.to_json())
    else:
        typer.echo(str(result))
    if result.remaining:
        raise fail(
            f"{result.user} still holds {result.address} open: "
            f"{describe_holders(result.remaining)}; an open fd outlives the ACL: "
            + ("it did not end; kill -9 it by hand" if kill else "--kill ends it"),
            1,
        )
