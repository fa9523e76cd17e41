"""``pyvfio grant`` / ``pyvfio revoke``: one user may open one device, and then not.

Thin shells over :mod:`pyvfio.host.grant`; both need root and take ``--json``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pyvfio.cli.common import app, handle_errors, print_json
from pyvfio.cli.host import JsonOpt, _parse_size

Address = Annotated[str, typer.Argument(help="PCI address of a device on vfio-pci")]
User = Annotated[str, typer.Option("--user", help="user name (or uid) to give it to")]


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
    """Let USER open the device through VFIO (an ACL on its nodes), and say what
    RLIMIT_MEMLOCK they need; 'pyvfio revoke' undoes it."""
    from pyvfio.host import grant as g

    result = g.grant(address, user, group=group, memlock=_parse_size(memlock))
    if as_json:
        print_json(result.to_json())
    else:
        typer.echo(str(result))


@app.command("revoke")
@handle_errors
def revoke(address: Address, user: User, as_json: JsonOpt = False) -> None:
    """Take a grant back: the user's access goes, each node gets its recorded owner,
    mode and ACL back. Revoking what was not granted says so and exits 0."""
    from pyvfio.host import grant as g

    result = g.revoke(address, user)
    if as_json:
        print_json(result.to_json())
    else:
        typer.echo(str(result))
