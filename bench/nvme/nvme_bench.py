"""pyvfio's NVMe driver against the kernel's nvme driver + fio, on one device, in one guest.

Runs where the NVMe controller is (the lab guest, as root): first ``fio`` on the
kernel's block device (``--direct=1``, io_uring, falling back to libaio), then the
same workloads through :mod:`pyvfio.drivers.nvme` (polled queue pair, one buffer per
slot, doorbell rung once per batch), then one pyvfio run under cProfile. Writes JSON.

``python bench/nvme/nvme_bench.py --out FILE [--runtime S] [--address BDF]``
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import glob
import io
import json
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from pyvfio.drivers import nvme_spec as spec
from pyvfio.drivers.nvme import Controller
from pyvfio.host import bind


@dataclass(frozen=True)
class Workload:
    name: str
    rw: str  # fio's --rw
    bs: int
    qd: int

    @property
    def write(self) -> bool:
        return "write" in self.rw

    @property
    def random(self) -> bool:
        return self.rw.startswith("rand")


MAIN = [
    Workload("4k-randread-qd1", "randread", 4096, 1),
    Workload("4k-randread-qd32", "randread", 4096, 32),
    Workload("4k-randwrite-qd1", "randwrite", 4096, 1),
    Workload("4k-randwrite-qd32", "randwrite", 4096, 32),
    Workload("128k-seqread-qd8", "read", 128 * 1024, 8),
]
SWEEP = [Workload(f"4k-randread-qd{qd}", "randread", 4096, qd) for qd in (1, 2, 4, 8, 16, 32)]


def percentiles(lat_ns: list[int]) -> dict[str, float]:
    if not lat_ns:
        return {}
    lat_ns.sort()
    n = len(lat_ns)

    def at(p: float) -> float:
        return lat_ns[min(n - 1, int(p / 100 * n))] / 1000

    return {
        "mean_us": sum(lat_ns) / n / 1000,
        "p50_us": at(50),
        "p99_us": at(99),
        "p99.9_us": at(99.9),
    }


# -- the kernel side ---------------------------------------------------------------------------


def block_device(timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = sorted(glob.glob("/dev/nvme[0-9]*n1"))
        if nodes:
            return nodes[0]
        time.sleep(0.1)
    raise RuntimeError("no /dev/nvme*n1: is the nvme driver bound?")


def fio_engine(node: str) -> str:
    for engine in ("io_uring", "libaio"):
        probe = subprocess.run(
            ["fio", "--name=probe", f"--filename={node}", "--direct=1", f"--ioengine={engine}",
             "--rw=read", "--bs=4k", "--size=4k", "--output-format=json"],
            capture_output=True, text=True,
        )  # fmt: skip
        if probe.returncode == 0:
            return engine
    raise RuntimeError(f"fio runs with neither io_uring nor libaio on {node}")


def run_fio(node: str, engine: str, w: Workload, runtime: float) -> dict[str, Any]:
    out = subprocess.run(
        ["fio", "--name=bench", f"--filename={node}", "--direct=1", f"--ioengine={engine}",
         f"--rw={w.rw}", f"--bs={w.bs}", f"--iodepth={w.qd}", f"--runtime={runtime}",
         "--time_based", "--norandommap", "--randrepeat=0", "--group_reporting",
         "--percentile_list=50:99:99.9", "--output-format=json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    job = json.loads(out.stdout)["jobs"][0]
    side = job["write" if w.write else "read"]
    pct = side["clat_ns"].get("percentile", {})
    return {
        "iops": side["iops"],
        "bw_mib_s": side["bw_bytes"] / 2**20,
        "ios": side["total_ios"],
        "mean_us": side["lat_ns"]["mean"] / 1000,
        "p50_us": pct.get("50.000000", 0) / 1000,
        "p99_us": pct.get("99.000000", 0) / 1000,
        "p99.9_us": pct.get("99.900000", 0) / 1000,
        "cpu_sys_pct": job["sys_cpu"],
        "cpu_usr_pct": job["usr_cpu"],
    }


# -- the pyvfio side -----------------------------------------------------------------------------


def draw_lbas(ctrl: Controller, w: Workload) -> list[int] | None:
    """Random block-aligned LBAs, drawn before the clock starts (None: sequential)."""
    if not w.random:
        return None
    ns = ctrl.namespaces[1]
    blocks = w.bs // ns.block_size
    slots = ns.size // blocks
    rng = random.Random(1)
    return [int(rng.random() * slots) * blocks for _ in range(65536)]


def run_pyvfio(
    ctrl: Controller, w: Workload, runtime: float, lbas: list[int] | None = None
) -> dict[str, Any]:
    """``w.qd`` commands in flight on one queue pair for ``runtime`` seconds: polled, or
    sleeping on the queue's MSI-X vector when the controller was opened with msix."""
    qp = ctrl.queues[0]
    irq = qp.irq
    ns = ctrl.namespaces[1]
    blocks = w.bs // ns.block_size
    slots = ns.size // blocks
    opcode = int(spec.IoOpcode.WRITE if w.write else spec.IoOpcode.READ)
    if lbas is None:
        lbas = draw_lbas(ctrl, w)
    seq = 0
    with ctrl.device.dma_alloc(w.qd * w.bs) as buf:
        iovas = [buf.iova + i * w.bs for i in range(w.qd)]
        started = [0] * qp.size
        slot_of = [0] * qp.size
        free = list(range(w.qd))
        lat: list[int] = []
        submit, reap, clock = qp.submit_io, qp.reap, time.perf_counter_ns
        n = 0
        begin = clock()
        end = begin + int(runtime * 1e9)
        in_flight = 0
        while True:
            now = clock()
            if now < end and free:
                while free:
                    slot = free.pop()
                    if lbas is not None:
                        lba = lbas[n & 0xFFFF]
                    else:
                        lba = seq * blocks
                        seq = seq + 1 if seq + 1 < slots else 0
                    n += 1
                    cid = submit(opcode, 1, lba, blocks, iovas[slot], w.bs, ring=False)
                    started[cid] = now
                    slot_of[cid] = slot
                    in_flight += 1
                qp.ring()
            elif now >= end and not in_flight:
                break
            done = reap()
            if done:
                t = clock()
                for cid, status, _ in done:
                    if status:
                        qp.check(cid, status)
                    lat.append(t - started[cid])
                    free.append(slot_of[cid])
                in_flight -= len(done)
            elif irq is not None:
                with contextlib.suppress(TimeoutError):
                    irq.wait(1.0)
        elapsed = (clock() - begin) / 1e9
    ios = len(lat)
    return {
        "iops": ios / elapsed,
        "bw_mib_s": ios * w.bs / elapsed / 2**20,
        "ios": ios,
        **percentiles(lat),
    }


def profile_pyvfio(ctrl: Controller, w: Workload, runtime: float) -> str:
    lbas = draw_lbas(ctrl, w)
    prof = cProfile.Profile()
    prof.enable()
    run_pyvfio(ctrl, w, runtime, lbas)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(14)
    return text.getvalue()


def find_nvme() -> str:
    manifest = os.environ.get("PYVFIO_LAB_MANIFEST")
    if manifest:
        from pyvfio.lab import guest

        return guest.address("nvme")
    for dev in sorted(glob.glob("/sys/bus/pci/devices/*")):
        with open(f"{dev}/class") as f:
            if int(f.read(), 16) == 0x010802:
                return os.path.basename(dev)
    raise RuntimeError("no NVMe controller here")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--runtime", type=float, default=4.0, help="seconds per workload")
    parser.add_argument("--address", default=None)
    args = parser.parse_args(argv)
    if shutil.which("fio") is None:
        print("nvme_bench: fio is missing (apt-get install fio)", file=sys.stderr)
        return 1
    addr = args.address or find_nvme()
    workloads = {w.name: w for w in [*MAIN, *SWEEP]}
    result: dict[str, Any] = {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runtime_s": args.runtime,
        "workloads": {name: asdict(w) for name, w in workloads.items()},
        "main": [w.name for w in MAIN],
        "sweep": [w.name for w in SWEEP],
        "kernel_driver": {},
        "pyvfio": {},
        "pyvfio_msix": {},
    }

    # Each workload runs on both drivers back to back (rebinding in between), so a
    # change in the host's load hits both sides of a ratio alike.
    original = bind.bind_to(addr, "nvme")
    try:
        engine = fio_engine(block_device())
        result["fio"] = {"engine": engine, "version": subprocess.getoutput("fio --version")}
        for name, w in workloads.items():
            bind.bind_to(addr, "nvme")
            res = run_fio(block_device(), engine, w, args.runtime)
            result["kernel_driver"][name] = res
            print(f"kernel {name}: {res['iops']:.0f} IOPS, p50 {res['p50_us']:.0f} us", flush=True)
            bind.bind_vfio(addr)
            with Controller.open(addr) as ctrl:
                result["controller"] = str(ctrl.info)
                res = run_pyvfio(ctrl, w, args.runtime)
            result["pyvfio"][name] = res
            print(f"pyvfio {name}: {res['iops']:.0f} IOPS, p50 {res['p50_us']:.0f} us", flush=True)
            if w in SWEEP:
                with Controller.open(addr, msix=True) as ctrl:
                    res = run_pyvfio(ctrl, w, args.runtime)
                result["pyvfio_msix"][name] = res
                print(f"pyvfio+msix {name}: {res['iops']:.0f} IOPS", flush=True)
        with Controller.open(addr) as ctrl:
            result["profile_4k_randread_qd32"] = profile_pyvfio(
                ctrl, workloads["4k-randread-qd32"], args.runtime
            )
    finally:
        bind.give_back(addr, original)
    for name in workloads:
        k, p = result["kernel_driver"].get(name), result["pyvfio"].get(name)
        if k and p and k["iops"]:
            p["ratio_iops"] = p["iops"] / k["iops"]
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
