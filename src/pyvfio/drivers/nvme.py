"""A userspace NVMe driver on pyvfio: polled (or MSI-X) queue pairs, PRPs, admin commands.

::

    from pyvfio.drivers.nvme import Controller
    with Controller.open("0000:00:11.0") as ctrl:     # the device is on vfio-pci
        print(ctrl.info.model, ctrl.namespaces[1].size_bytes)
        ctrl.write(0, b"x" * 4096)
        data = ctrl.read(0, 8)                          # 8 blocks from LBA 0

Bring-up follows the NVMe base specification (3.5.1, "Memory-based controller
initialization"): disable and wait for CSTS.RDY=0, set the admin queue (AQA, ASQ,
ACQ), enable with the host page size and 64/16-byte entries, wait for CSTS.RDY=1
within CAP.TO, then Identify and Set Features (Number of Queues) before creating I/O
queues. Disabling first is also how a controller left enabled by a killed process
is recovered: CC.EN 1->0 is a controller reset, which drops every queue it had.

Memory the controller reaches by DMA (queues, PRP lists, the bounce buffer) is freed
only once the controller can no longer use it: after shutdown (CC.SHN) on close, or
after disabling it when the shutdown does not finish.

The hot path (``QueuePair.submit_io`` / ``reap``) packs entries with one precompiled
``struct``, writes doorbells as single 32-bit stores through the mmap'd BAR0, and
polls the phase tag in the completion queue's memory without a system call.
"""

from __future__ import annotations

import contextlib
import struct
import time
import weakref
from collections.abc import Iterable
from dataclasses import replace

from pyvfio._uapi.pci_regs import PCI_CLASS_REVISION
from pyvfio.device import Device
from pyvfio.dma import DmaBuffer
from pyvfio.drivers import nvme_spec as spec
from pyvfio.drivers.nvme_spec import (
    Capabilities,
    Command,
    ControllerFatalError,
    ControllerInfo,
    ErrorLogEntry,
    NamespaceInfo,
    NvmeError,
    NvmeStatusError,
    NvmeTimeoutError,
    SmartLog,
    Status,
)
from pyvfio.errors import UnsupportedError
from pyvfio.interrupt import Interrupt
from pyvfio.iommu import Iommu
from pyvfio.iommu import open as open_device
from pyvfio.region import Region

__all__ = [
    "Controller",
    "ControllerFatalError",
    "NvmeError",
    "NvmeStatusError",
    "NvmeTimeoutError",
    "QueuePair",
]

#: PCI class code of an NVM Express controller (mass storage, NVM, NVMe).
NVME_CLASS = 0x010802
PAGE_SIZE = 4096
ADMIN_QUEUE_SIZE = 32
#: Entries per I/O queue unless asked otherwise (one stays empty: 127 in flight).
DEFAULT_QUEUE_SIZE = 128
#: I/O queue pairs asked for in Set Features (Number of Queues).
DEFAULT_MAX_QUEUES = 16
COMMAND_TIMEOUT = 10.0
#: The bounce buffer behind ``Controller.read`` / ``write``.
BOUNCE_SIZE = 2 << 20

_SQE = spec.SQE
_READ, _WRITE = int(spec.IoOpcode.READ), int(spec.IoOpcode.WRITE)


def _describe(opcode: int, qid: int) -> str:
    kind: type[spec.AdminOpcode] | type[spec.IoOpcode] = (
        spec.AdminOpcode if qid == 0 else spec.IoOpcode
    )
    try:
        return kind(opcode).name.replace("_", " ").lower()
    except ValueError:
        return f"opcode {opcode:#04x}"


class QueuePair:
    """A submission queue and its completion queue (qid 0 is the admin pair).

    Command identifiers are slot numbers: at most ``size - 1`` commands are in flight
    (a full SQ keeps one entry empty), so the SQ never overflows and each in-flight
    command owns one PRP list page (``prp_iova + cid * page``).

    Use either ``wait(cid)`` per command, or ``submit_* (ring=False)`` + ``ring()`` +
    ``reap()`` for many in flight.
    """

    __slots__ = (
        "_cq",
        "_cq16",
        "_cq32",
        "_cq_db",
        "_cq_head",
        "_db",
        "_free",
        "_opcodes",
        "_page",
        "_phase",
        "_prp",
        "_prp_iova",
        "_prp_view",
        "_results",
        "_sq",
        "_sq_db",
        "_sq_tail",
        "_sq_view",
        "controller",
        "irq",
        "qid",
        "size",
        "vector",
    )

    def __init__(
        self,
        controller: Controller,
        qid: int,
        size: int,
        doorbells: memoryview,
        *,
        irq: Interrupt | None = None,
        vector: int | None = None,
    ) -> None:
        self.controller = controller
        self.qid = qid
        self.size = size
        self.irq = irq
        self.vector = vector
        self._page = PAGE_SIZE
        dev = controller.device
        self._sq = dev.dma_alloc(size * spec.SQE_SIZE)
        self._cq = self._prp = None
        try:
            self._cq = dev.dma_alloc(size * spec.CQE_SIZE)
            self._prp = dev.dma_alloc(size * PAGE_SIZE)
        except BaseException:
            self._free_memory()
            raise
        self._sq_view = self._sq.view
        self._cq16 = self._cq.view.cast("H")
        self._cq32 = self._cq.view.cast("I")
        self._prp_view = self._prp.view
        self._prp_iova = self._prp.iova
        sq_db, cq_db = spec.doorbell_offsets(qid, controller.cap.doorbell_stride)
        self._db = doorbells
        self._sq_db, self._cq_db = sq_db // 4, cq_db // 4
        self._sq_tail = 0
        self._cq_head = 0
        self._phase = 1
        # Highest CID on top: pop() hands out 0, 1, 2... first.
        self._free = list(range(size - 2, -1, -1))
        self._opcodes = [0] * size
        self._results: dict[int, tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"<QueuePair {self.qid} of {self.controller.device.bdf}, {self.size} entries>"

    @property
    def sq_iova(self) -> int:
        assert self._sq is not None
        return self._sq.iova

    @property
    def cq_iova(self) -> int:
        assert self._cq is not None
        return self._cq.iova

    @property
    def in_flight(self) -> int:
        return self.size - 1 - len(self._free)

    @property
    def capacity(self) -> int:
        """How many more commands may be submitted before some complete."""
        return len(self._free)

    # -- submission ------------------------------------------------------------------------

    def _take_cid(self) -> int:
        try:
            return self._free.pop()
        except IndexError:
            raise NvmeError(
                f"queue {self.qid} has {self.size - 1} commands in flight: reap() some first"
            ) from None

    def _push(self, cid: int, entry: tuple[int, ...], ring: bool) -> None:
        tail = self._sq_tail
        _SQE.pack_into(self._sq_view, tail * 64, *entry)
        tail += 1
        if tail == self.size:
            tail = 0
        self._sq_tail = tail
        if ring:
            self._db[self._sq_db] = tail

    def ring(self) -> None:
        """Tell the controller about every entry submitted with ``ring=False``."""
        self._db[self._sq_db] = self._sq_tail

    def submit(self, command: Command, *, ring: bool = True) -> int:
        """Queue ``command``; its CID."""
        cid = self._take_cid()
        self._opcodes[cid] = command.opcode
        self._push(
            cid,
            (
                command.opcode,
                0,
                cid,
                command.nsid,
                0,
                0,
                0,
                command.prp1,
                command.prp2,
                command.cdw10,
                command.cdw11,
                command.cdw12,
                command.cdw13,
                command.cdw14,
                command.cdw15,
            ),
            ring,
        )
        return cid

    def submit_io(
        self,
        opcode: int,
        nsid: int,
        lba: int,
        blocks: int,
        iova: int,
        length: int,
        *,
        ring: bool = True,
    ) -> int:
        """Queue a Read or Write of ``blocks`` blocks at ``lba`` to/from ``length``
        bytes of IOVA space; its CID. The PRP list, if the transfer needs one, goes
        into this CID's own page."""
        cid = self._free.pop() if self._free else self._take_cid()
        page = self._page
        first = iova & -page
        last = (iova + length - 1) & -page
        if first == last:  # the common 4 KiB case: PRP1 alone
            prp2 = 0
        elif last - first == page:
            prp2 = last
        else:
            count = (last - first) // page
            if count > page // 8:
                self._free.append(cid)
                raise ValueError(
                    f"{length} bytes need {count + 1} PRP entries; one list page holds "
                    f"{page // 8 + 1}: split the transfer (controller.max_transfer)"
                )
            off = cid * page
            struct.pack_into(
                f"<{count}Q", self._prp_view, off, *range(first + page, last + 1, page)
            )
            prp2 = self._prp_iova + off
        self._opcodes[cid] = opcode
        tail = self._sq_tail
        _SQE.pack_into(
            self._sq_view,
            tail * 64,
            opcode,
            0,
            cid,
            nsid,
            0,
            0,
            0,
            iova,
            prp2,
            lba & 0xFFFFFFFF,
            lba >> 32,
            blocks - 1,
            0,
            0,
            0,
        )
        tail += 1
        if tail == self.size:
            tail = 0
        self._sq_tail = tail
        if ring:
            self._db[self._sq_db] = tail
        return cid

    # -- completion ------------------------------------------------------------------------

    def _consume(self) -> int:
        """Move every posted completion into ``_results``; how many there were."""
        cq16, head, phase = self._cq16, self._cq_head, self._phase
        status = cq16[head * 8 + 7]
        if status & 1 != phase:
            return 0
        results, size, n = self._results, self.size, 0
        while status & 1 == phase:
            results[cq16[head * 8 + 6]] = (status >> 1, self._cq32[head * 4])
            n += 1
            head += 1
            if head == size:
                head = 0
                phase ^= 1
            status = cq16[head * 8 + 7]
        self._cq_head, self._phase = head, phase
        self._db[self._cq_db] = head
        return n

    def reap(self) -> list[tuple[int, int, int]]:
        """Completions since the last call, as (cid, status, dw0); their CIDs are free
        again. ``status`` is 0 for success (:meth:`check` raises the decoded error).

        The hot path of a deep queue: the CQ is read straight into the list, without
        the per-CID stash that ``wait`` uses.
        """
        out: list[tuple[int, int, int]] = []
        if self._results:
            out = [(cid, st, dw0) for cid, (st, dw0) in self._results.items()]
            self._results.clear()
            self._free.extend(cid for cid, _, _ in out)
        cq16, head, phase = self._cq16, self._cq_head, self._phase
        status = cq16[head * 8 + 7]
        if status & 1 != phase:
            return out
        cq32, free, size, append = self._cq32, self._free, self.size, out.append
        while status & 1 == phase:
            cid = cq16[head * 8 + 6]
            append((cid, status >> 1, cq32[head * 4]))
            free.append(cid)
            head += 1
            if head == size:
                head = 0
                phase ^= 1
            status = cq16[head * 8 + 7]
        self._cq_head, self._phase = head, phase
        self._db[self._cq_db] = head
        return out

    def check(self, cid: int, status: int, what: str | None = None) -> None:
        """Raise NvmeStatusError if ``status`` (from reap) is not a success."""
        if status:
            opcode = self._opcodes[cid]
            raise NvmeStatusError(
                Status.from_word(status << 1),
                opcode=opcode,
                qid=self.qid,
                cid=cid,
                what=what or f"{_describe(opcode, self.qid)} on queue {self.qid}",
            )

    def wait(self, cid: int, timeout: float = COMMAND_TIMEOUT, what: str | None = None) -> int:
        """Wait for command ``cid`` (polling, or on the queue's interrupt); its DW0.

        NvmeStatusError if it failed, NvmeTimeoutError (and ControllerFatalError when
        CSTS.CFS says why) if it did not complete in time.
        """
        results = self._results
        deadline = time.monotonic() + timeout
        irq = self.irq
        spins = 0
        while cid not in results:
            if self._consume():
                continue
            if irq is not None:
                # The eventfd counts: a completion posted since _consume() still wakes us.
                with contextlib.suppress(TimeoutError):
                    irq.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            else:
                spins += 1
                if spins & 0x3F:
                    continue
                time.sleep(0)
            if time.monotonic() > deadline:
                self.controller.check_fatal()
                raise NvmeTimeoutError(
                    f"{what or _describe(self._opcodes[cid], self.qid)} (CID {cid}) on queue "
                    f"{self.qid} of {self.controller.device.bdf} did not complete in {timeout} s"
                )
        status, dw0 = results.pop(cid)
        self._free.append(cid)
        self.check(cid, status, what)
        return dw0

    def execute(self, command: Command, timeout: float = COMMAND_TIMEOUT) -> int:
        """Submit ``command`` and wait for it; the completion's DW0."""
        return self.wait(self.submit(command), timeout)

    def wait_all(self, cids: Iterable[int], timeout: float = COMMAND_TIMEOUT) -> None:
        """Wait for several commands; the first failure is raised once all are done."""
        first: NvmeError | None = None
        for cid in cids:
            try:
                self.wait(cid, timeout)
            except NvmeStatusError as err:
                first = first or err
        if first is not None:
            raise first

    # -- lifetime ----------------------------------------------------------------------------

    def _free_memory(self) -> None:
        """Drop the views, then the DMA memory (the controller must be done with it)."""
        for name in ("_cq16", "_cq32"):
            view = getattr(self, name, None)
            if view is not None:
                view.release()
                setattr(self, name, None)
        for buf in (self._sq, self._cq, self._prp):
            if buf is not None:
                buf.free()


class Controller:
    """An NVMe controller driven from userspace (``Controller.open(BDF)`` or
    ``Controller(device)``).

    ``io_queues`` I/O queue pairs are created at open (``queues``); more come from
    ``create_queue_pair``. ``msix=True`` wires MSI-X vectors to the I/O queues and waits
    on them instead of polling.
    """

    def __init__(
        self,
        device: Device,
        *,
        io_queues: int = 1,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        msix: bool = False,
        max_queues: int = DEFAULT_MAX_QUEUES,
        owns_device: bool = False,
    ) -> None:
        self.device = device
        self._owns_device = owns_device
        self._closed = False
        self.queues: list[QueuePair] = []
        self.admin: QueuePair | None = None
        self.irqs: list[Interrupt] = []
        self._bounce: DmaBuffer | None = None
        self._doorbells: memoryview | None = None
        class_code = device.config.read32(PCI_CLASS_REVISION) >> 8
        if class_code != NVME_CLASS:
            raise UnsupportedError(
                f"{device.bdf} has class {class_code:06x}, not an NVMe controller (010802)",
                device=device.bdf,
            )
        self.bar0: Region = device.bar(0)
        self.cap = Capabilities.decode(self.bar0.read64(spec.REG_CAP))
        if self.cap.mps_min > PAGE_SIZE:
            raise UnsupportedError(
                f"{device.bdf} wants pages of at least {self.cap.mps_min} bytes; "
                f"this driver uses {PAGE_SIZE}",
                device=device.bdf,
            )
        device.enable_bus_master()
        self._finalizer = weakref.finalize(self, _abandon, self.bar0)
        try:
            self._bring_up(io_queues, queue_size, msix, max_queues)
        except BaseException:
            self._teardown(shutdown=False)
            raise

    @classmethod
    def open(
        cls,
        address: str,
        iommu: Iommu | None = None,
        *,
        io_queues: int = 1,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        msix: bool = False,
        max_queues: int = DEFAULT_MAX_QUEUES,
    ) -> Controller:
        """Open the controller at ``address`` (on vfio-pci) and bring it up."""
        device = iommu.open(address) if iommu else open_device(address)
        try:
            return cls(
                device,
                io_queues=io_queues,
                queue_size=queue_size,
                msix=msix,
                max_queues=max_queues,
                owns_device=True,
            )
        except BaseException:
            device.close()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.queues)} I/O queue(s)"
        return f"<nvme.Controller {self.device.bdf} ({state})>"

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- registers ---------------------------------------------------------------------------

    def csts(self) -> int:
        return self.bar0.read32(spec.REG_CSTS)

    def check_fatal(self) -> None:
        csts = self.csts()
        if csts == 0xFFFFFFFF:
            raise ControllerFatalError(
                f"{self.device.bdf} reads all ones: it left the bus or its BAR is disabled"
            )
        if csts & spec.CSTS_CFS:
            raise ControllerFatalError(
                f"{self.device.bdf} reports a controller fatal status (CSTS.CFS); "
                "close it and open it again to reset it"
            )

    def _wait_csts(self, mask: int, value: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            csts = self.csts()
            if csts & mask == value:
                return
            if csts != 0xFFFFFFFF and csts & spec.CSTS_CFS and what == "ready":
                raise ControllerFatalError(
                    f"{self.device.bdf} reported a fatal status (CSTS.CFS) while becoming "
                    "ready; check the admin queue setup, or reset the device"
                )
            if time.monotonic() > deadline:
                raise NvmeTimeoutError(
                    f"{self.device.bdf} did not become {what} within {timeout:.1f} s "
                    f"(CAP.TO; CSTS {csts:#x})"
                )
            time.sleep(0.001)

    @property
    def _ready_timeout(self) -> float:
        return max(self.cap.timeout_ms, 500) / 1000

    def _disable(self) -> None:
        """CC.EN=0 and wait for CSTS.RDY=0: a controller reset (3.5.2)."""
        cc = self.bar0.read32(spec.REG_CC)
        if cc & spec.CC_EN:
            self.bar0.write32(spec.REG_CC, cc & ~(spec.CC_EN | spec.CC_SHN_MASK) & 0xFFFFFFFF)
        self._wait_csts(spec.CSTS_RDY, 0, self._ready_timeout, "disabled")

    def _bring_up(self, io_queues: int, queue_size: int, msix: bool, max_queues: int) -> None:
        bar = self.bar0
        #: CC.EN found set at open: a previous owner did not shut the controller down.
        self.found_enabled = bool(bar.read32(spec.REG_CC) & spec.CC_EN)
        try:
            self._disable()
        except NvmeTimeoutError:
            if not self.device.info.reset_works:
                raise
            # A wedged controller that ignores CC.EN: a function reset, then again.
            self.device.reset()
            self.device.enable_bus_master()
            self._disable()
        self._doorbells = bar.map().cast("I")
        self.admin = QueuePair(self, 0, ADMIN_QUEUE_SIZE, self._doorbells)
        aq = ADMIN_QUEUE_SIZE - 1
        bar.write32(spec.REG_AQA, aq | aq << 16)
        # Two 32-bit halves: older controllers (and QEMU) take no 64-bit stores here.
        for reg, iova in ((spec.REG_ASQ, self.admin.sq_iova), (spec.REG_ACQ, self.admin.cq_iova)):
            bar.write32(reg, iova & 0xFFFFFFFF)
            bar.write32(reg + 4, iova >> 32)
        bar.write32(spec.REG_CC, spec.controller_config(PAGE_SIZE))
        self._wait_csts(spec.CSTS_RDY, spec.CSTS_RDY, self._ready_timeout, "ready")

        self.info = ControllerInfo.parse(self._admin_read(spec.identify(spec.Cns.CONTROLLER)))
        mdts = self.info.max_transfer(self.cap.mps_min)
        # One PRP list page per command: PRP1 plus page/8 entries.
        limit = PAGE_SIZE * (PAGE_SIZE // 8)
        self.max_transfer = min(mdts, limit) if mdts else limit
        self.namespaces: dict[int, NamespaceInfo] = {
            nsid: self.identify_namespace(nsid) for nsid in self.active_namespaces()
        }

        dw0 = self.admin.execute(spec.set_number_of_queues(max_queues, max_queues))
        #: I/O queue pairs the controller granted (Set Features, Number of Queues).
        self.max_queue_pairs = min((dw0 & 0xFFFF) + 1, (dw0 >> 16) + 1)
        if msix:
            table = self.device.config.capabilities.msix
            if table is None:
                raise UnsupportedError(f"{self.device.bdf} has no MSI-X", device=self.device.bdf)
            count = min(table.table_size, self.max_queue_pairs + 1)
            self.irqs = self.device.enable_irqs("msix", count=count)
        else:
            # Polling: keep INTx quiet (INTMS is only defined without MSI-X).
            bar.write32(spec.REG_INTMS, 0xFFFFFFFF)
        for _ in range(io_queues):
            self.create_queue_pair(queue_size)

    # -- admin commands ----------------------------------------------------------------------

    def _admin_read(self, command: Command, size: int = 4096) -> bytes:
        """An admin command that returns ``size`` bytes (at most a page) of data."""
        admin = self._require_admin()
        with self.device.dma_alloc(PAGE_SIZE) as buf:
            admin.execute(replace(command, prp1=buf.iova))
            return buf.read(0, size)

    def _require_admin(self) -> QueuePair:
        if self._closed or self.admin is None:
            raise NvmeError(f"the NVMe controller {self.device.bdf} is closed")
        return self.admin

    def identify_controller(self) -> ControllerInfo:
        return ControllerInfo.parse(self._admin_read(spec.identify(spec.Cns.CONTROLLER)))

    def identify_namespace(self, nsid: int) -> NamespaceInfo:
        return NamespaceInfo.parse(nsid, self._admin_read(spec.identify(spec.Cns.NAMESPACE, nsid)))

    def active_namespaces(self) -> list[int]:
        return spec.parse_namespace_list(
            self._admin_read(spec.identify(spec.Cns.ACTIVE_NAMESPACES, 0))
        )

    def get_features(self, fid: int, nsid: int = 0) -> int:
        """Get Features (current value): the completion's DW0."""
        return self._require_admin().execute(spec.get_features(fid, nsid))

    def smart_log(self) -> SmartLog:
        raw = self._admin_read(spec.get_log_page(spec.LogPage.SMART, SmartLog.SIZE // 4), 512)
        return SmartLog.parse(raw)

    def error_log(self) -> list[ErrorLogEntry]:
        entries = min(self.info.elpe, PAGE_SIZE // ErrorLogEntry.SIZE)
        size = entries * ErrorLogEntry.SIZE
        raw = self._admin_read(spec.get_log_page(spec.LogPage.ERROR, size // 4), size)
        return spec.parse_error_log(raw)

    # -- I/O queues ----------------------------------------------------------------------------

    def create_queue_pair(self, size: int = DEFAULT_QUEUE_SIZE) -> QueuePair:
        """Create an I/O CQ and SQ of ``size`` entries (capped by CAP.MQES)."""
        admin = self._require_admin()
        assert self._doorbells is not None
        used = {q.qid for q in self.queues}
        qid = next((q for q in range(1, self.max_queue_pairs + 1) if q not in used), None)
        if qid is None:
            raise NvmeError(
                f"{self.device.bdf} granted {self.max_queue_pairs} I/O queue pairs, all in use"
            )
        size = max(2, min(size, self.cap.mqes))
        irq = vector = None
        if self.irqs:
            vector = qid if qid < len(self.irqs) else 1 + (qid - 1) % (len(self.irqs) - 1)
            irq = self.irqs[vector]
        qp = QueuePair(self, qid, size, self._doorbells, irq=irq, vector=vector)
        try:
            admin.execute(spec.create_io_cq(qid, size, qp.cq_iova, vector))
            try:
                admin.execute(spec.create_io_sq(qid, size, qp.sq_iova, qid))
            except BaseException:
                admin.execute(spec.delete_io_cq(qid))
                raise
        except BaseException:
            qp._free_memory()
            raise
        self.queues.append(qp)
        return qp

    def delete_queue_pair(self, qp: QueuePair) -> None:
        """Delete the SQ, then the CQ (a CQ goes only once its SQs are gone), then free."""
        admin = self._require_admin()
        self.queues.remove(qp)
        try:
            admin.execute(spec.delete_io_sq(qp.qid))
            admin.execute(spec.delete_io_cq(qp.qid))
        finally:
            qp._free_memory()

    # -- data --------------------------------------------------------------------------------

    def namespace(self, nsid: int = 1) -> NamespaceInfo:
        try:
            return self.namespaces[nsid]
        except KeyError:
            raise ValueError(
                f"{self.device.bdf} has no active namespace {nsid} "
                f"(active: {', '.join(map(str, self.namespaces)) or 'none'})"
            ) from None

    def _check_blocks(self, lba: int, blocks: int, nsid: int) -> NamespaceInfo:
        """The namespace, once ``lba`` and ``blocks`` are possible at all.

        Where the range leaves the namespace is not checked here: the controller answers
        an LBA outside it with LBA Out of Range, which NvmeStatusError reports. A count
        larger than the whole namespace is refused first, before a single block moves.
        """
        if not isinstance(lba, int) or not isinstance(blocks, int) or blocks < 1 or lba < 0:
            raise ValueError(f"LBA {lba!r} and {blocks!r} blocks: the LBA is >= 0, blocks >= 1")
        ns = self.namespace(nsid)
        if blocks > ns.size:
            raise ValueError(
                f"{blocks} blocks: namespace {nsid} of {self.device.bdf} has {ns.size} in all"
            )
        return ns

    def _io_queue(self, queue: QueuePair | None) -> QueuePair:
        if queue is not None:
            return queue
        self._require_admin()  # a closed controller says so, not "no I/O queue"
        if not self.queues:
            raise NvmeError(f"{self.device.bdf} has no I/O queue: create_queue_pair() first")
        return self.queues[0]

    def _bounce_buffer(self) -> DmaBuffer:
        if self._bounce is None:
            self._bounce = self.device.dma_alloc(BOUNCE_SIZE)
        return self._bounce

    def _transfer(
        self,
        opcode: int,
        lba: int,
        blocks: int,
        nsid: int,
        queue: QueuePair | None,
        timeout: float,
        data: bytes | memoryview | None = None,
    ) -> bytes:
        bs = self._check_blocks(lba, blocks, nsid).block_size
        qp = self._io_queue(queue)
        bounce = self._bounce_buffer()
        chunk_blocks = min(self.max_transfer, 0x10000 * bs) // bs
        round_blocks = bounce.size // bs
        out = bytearray()
        done = 0
        while done < blocks:
            this_round = min(round_blocks, blocks - done)
            if data is not None:
                bounce.view[: this_round * bs] = data[done * bs : (done + this_round) * bs]
            cids: list[int] = []
            offset = 0
            while offset < this_round:
                n = min(chunk_blocks, this_round - offset)
                if qp.capacity == 0:
                    qp.wait_all(cids, timeout)
                    cids = []
                cids.append(
                    qp.submit_io(
                        opcode, nsid, lba + done + offset, n, bounce.iova + offset * bs, n * bs
                    )
                )
                offset += n
            qp.wait_all(cids, timeout)
            if data is None:
                out += bounce.view[: this_round * bs]
            done += this_round
        return bytes(out)

    def read(
        self,
        lba: int,
        blocks: int,
        *,
        nsid: int = 1,
        queue: QueuePair | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> bytes:
        """``blocks`` logical blocks from ``lba`` (split by MDTS, through a bounce buffer)."""
        return self._transfer(_READ, lba, blocks, nsid, queue, timeout)

    def write(
        self,
        lba: int,
        data: bytes | bytearray | memoryview,
        *,
        nsid: int = 1,
        queue: QueuePair | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        """Write ``data`` (whole blocks) from ``lba``."""
        bs = self.namespace(nsid).block_size
        if len(data) % bs or not data:
            raise ValueError(f"{len(data)} bytes are not a whole number of {bs}-byte blocks")
        self._transfer(_WRITE, lba, len(data) // bs, nsid, queue, timeout, memoryview(data))

    def write_zeroes(
        self,
        lba: int,
        blocks: int,
        *,
        nsid: int = 1,
        queue: QueuePair | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        if not self.info.supports_write_zeroes:
            raise UnsupportedError(
                f"{self.device.bdf} does not support Write Zeroes (ONCS bit 3)",
                device=self.device.bdf,
            )
        self._check_blocks(lba, blocks, nsid)
        qp = self._io_queue(queue)
        done = 0
        while done < blocks:
            n = min(0x10000, blocks - done)
            qp.execute(spec.write_zeroes(nsid, lba + done, n), timeout)
            done += n

    def flush(
        self, *, nsid: int = 1, queue: QueuePair | None = None, timeout: float = COMMAND_TIMEOUT
    ) -> None:
        self._io_queue(queue).execute(spec.flush(nsid), timeout)

    # -- shutdown ----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Delete the I/O queues, then a normal shutdown (CC.SHN=01b, wait SHST=10b)."""
        self.check_fatal()  # a dead controller answers nothing: straight to disabling it
        for qp in reversed(self.queues):
            with contextlib.suppress(NvmeError):
                self.delete_queue_pair(qp)
        cc = self.bar0.read32(spec.REG_CC)
        self.bar0.write32(spec.REG_CC, (cc & ~spec.CC_SHN_MASK) | spec.CC_SHN_NORMAL)
        timeout = max(5.0, self.info.rtd3e_us / 1e6) if hasattr(self, "info") else 5.0
        self._wait_csts(spec.CSTS_SHST_MASK, spec.CSTS_SHST_COMPLETE, timeout, "shut down")

    def _teardown(self, *, shutdown: bool) -> None:
        try:
            try:
                if shutdown:
                    self._shutdown()
                else:
                    self._disable()
            except Exception:
                # The controller must stop using our memory before it is freed.
                with contextlib.suppress(Exception):
                    self._disable()
        finally:
            self._finalizer.detach()
            for qp in [*self.queues, *([self.admin] if self.admin else [])]:
                qp._free_memory()
            self.queues, self.admin = [], None
            if self._bounce is not None:
                self._bounce.free()
                self._bounce = None
            if self._doorbells is not None:
                self._doorbells.release()
                self._doorbells = None
            if self.irqs:
                with contextlib.suppress(Exception):
                    self.device.disable_irqs("msix")
                self.irqs = []
            if self._owns_device:
                self.device.close()

    def close(self) -> None:
        """Shut the controller down cleanly (CC.SHN), free its memory; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._teardown(shutdown=True)


def _abandon(bar0: Region) -> None:
    """Safety net for a Controller never closed: stop it before its memory goes."""
    with contextlib.suppress(Exception):
        cc = bar0.read32(spec.REG_CC)
        bar0.write32(spec.REG_CC, cc & ~spec.CC_EN & 0xFFFFFFFF)
