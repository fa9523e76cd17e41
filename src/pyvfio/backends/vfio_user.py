"""The vfio-user backend: devices behind UNIX sockets, DMA mappings as messages.

Imported only when a ``vfio-user:`` address is opened (or ``Iommu("vfio-user")``
made): it brings the client (`pyvfio.vfio_user.client`) with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from pyvfio import _mem
from pyvfio._transport import DeviceTransport
from pyvfio.errors import UnsupportedError, VfioError
from pyvfio.info import IommuInfo, IovaRange
from pyvfio.vfio_user import is_vfio_user
from pyvfio.vfio_user.client import VfioUserClient


class VfioUserBackend:
    """Devices behind vfio-user sockets: DMA mappings are messages to each server.

    Every mapping goes to every connected device, and a device opened later gets the
    mappings that exist (what a type1 container does for a group that joins). With
    ``share_memory`` (the default), memory with an fd (a DmaBuffer's memfd) is passed
    so the server maps it; otherwise, or for memory without an fd, the server reaches
    it through DMA_READ/WRITE messages the client answers (the spec's choice for a
    client that does not trust the server with its memory: an mmap cannot be revoked).
    """

    name = "vfio-user"
    #: What serves it (`Backend.mode`): the same as its name.
    mode = "vfio-user"
    pins_memory = False  # a server pins nothing of ours

    def __init__(self, *, share_memory: bool = True, timeout: float | None = None) -> None:
        self.share_memory = share_memory
        self.timeout = timeout
        self.clients: dict[str, VfioUserClient] = {}
        #: iova -> (vaddr, size, fd, fd offset), replayed to devices that join later.
        self.maps: dict[int, tuple[int, int, int, int]] = {}

    def fileno(self) -> int:
        raise UnsupportedError(
            "a vfio-user Iommu has no kernel fd (each device has its socket: dev.fileno())"
        )

    def attach(
        self, address: str, group: int | None, vf_token: str | None = None
    ) -> DeviceTransport:
        """Connect to ``vfio-user:PATH`` and give it every live mapping."""
        if vf_token is not None:
            raise UnsupportedError(
                f"{address}: a VF token is vfio-pci's, for an SR-IOV VF on this host; a "
                "vfio-user device takes none (open it without vf_token)",
                device=address,
            )
        if not is_vfio_user(address):
            raise UnsupportedError(
                f"{address} is a PCI device on this host: a vfio-user Iommu opens only "
                "vfio-user:PATH devices (open it in Iommu('auto'))",
                device=address,
            )
        client = (
            VfioUserClient(address)
            if self.timeout is None
            else VfioUserClient(address, timeout=self.timeout)
        )
        try:
            for iova, (vaddr, size, fd, offset) in self.maps.items():
                client.dma_map(iova, size, vaddr, fd, offset)
        except BaseException:
            client.close()
            raise
        self.clients[client.address] = client
        return client

    def detach(self, address: str) -> None:
        self.clients.pop(address, None)  # the device closes its client

    def group_fds(self) -> Mapping[int, int]:
        return {}

    def info(self) -> IommuInfo:
        pgsizes = _mem.PAGE_SIZE
        avail = 65535
        for client in self.clients.values():
            pgsizes = (pgsizes & client.server.pgsizes) or pgsizes
            avail = min(avail, client.server.max_dma_maps)
        return IommuInfo(pgsizes, (IovaRange(0, (1 << 64) - 1),), max(0, avail - len(self.maps)))

    def map(self, vaddr: int, iova: int, size: int, fd: int = -1, fd_offset: int = 0) -> None:
        if not self.share_memory:
            fd, fd_offset = -1, 0
        done: list[VfioUserClient] = []
        try:
            for client in self.clients.values():
                client.dma_map(iova, size, vaddr, fd, fd_offset)
                done.append(client)
        except BaseException:
            for client in done:
                with contextlib.suppress(VfioError):
                    client.dma_unmap(iova, size)
            raise
        self.maps[iova] = (vaddr, size, fd, fd_offset)

    def unmap(self, iova: int, size: int) -> None:
        self.maps.pop(iova, None)
        failed: VfioError | None = None
        for client in self.clients.values():
            try:
                client.dma_unmap(iova, size)
            except VfioError as err:
                failed = failed or err
        if failed is not None:
            raise failed

    def close(self) -> None:
        for client in list(self.clients.values()):
            client.close()
        self.clients.clear()
        self.maps.clear()
