"""``pyvfio ls --json`` on synthetic snapshots against ``lspci -D -nn -k``.

Run: ``.venv/bin/python bench/bench_ls.py [--out bench/results/ls.json]``.

For each size (200 ... 2,000 functions, 4 per IOMMU group) a synthetic sysfs tree is
written with :func:`pyvfio.testing.large_host`; then, best and median of
``ROUNDS`` runs each:

* ``pyvfio ls --json --root TREE`` as a command (Python start and imports included);
* the library call behind it, in process (``iommu_groups`` + ``listing_json``);
* ``lspci -D -nn -k -A linux-sysfs -O sysfs.path=TREE/sys/bus/pci``: lspci reading the
  same tree (it shows no groups; names from the same pci.ids);
* ``lspci -D -nn -k`` and ``pyvfio ls --json`` on the live host, for reference;
* Python's start alone and ``import pyvfio.cli``, to separate start-up from work.

Nothing is asserted; the figures are for reading (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyvfio.host.inventory import iommu_groups, listing_json
from pyvfio.host.sysfs import Sysfs
from pyvfio.testing import large_host

SIZES = (200, 500, 1000, 2000)
ROUNDS = 9
PYVFIO = [sys.executable, "-m", "pyvfio"]


def timed(run: Callable[[], object], rounds: int = ROUNDS) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {
        "best_ms": round(min(times) * 1e3, 1),
        "median_ms": round(statistics.median(times) * 1e3, 1),
    }


def command(argv: list[str]) -> Callable[[], object]:
    def run() -> object:
        return subprocess.run(argv, capture_output=True, check=True)

    return run


def in_process(root: Path) -> Callable[[], object]:
    def run() -> object:
        sysfs = Sysfs(root)
        return json.dumps(listing_json(iommu_groups(sysfs), {}))

    return run


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/ls.json")
    args = parser.parse_args()
    lspci = shutil.which("lspci")
    load_before = load_average()
    sizes = []
    with tempfile.TemporaryDirectory(prefix="pyvfio-bench-ls-") as tmp:
        for n in SIZES:
            root = Path(tmp) / f"host-{n}"
            large_host(root, n)
            groups = len(os.listdir(root / "sys/kernel/iommu_groups"))
            row: dict[str, object] = {"devices": n, "groups": groups}
            row["pyvfio_ls_json_command"] = timed(
                command([*PYVFIO, "ls", "--json", "--root", str(root)])
            )
            row["pyvfio_ls_json_in_process"] = timed(in_process(root))
            if lspci:
                argv = [
                    lspci,
                    "-D",
                    "-nn",
                    "-k",
                    "-A",
                    "linux-sysfs",
                    "-O",
                    f"sysfs.path={root}/sys/bus/pci",
                ]
                out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
                row["lspci_same_tree_lines"] = sum(
                    1 for ln in out.splitlines() if not ln.startswith("\t")
                )
                row["lspci_same_tree"] = timed(command(argv))
            sizes.append(row)
            print(json.dumps(row), flush=True)
    startup = {
        "python_c_pass": timed(command([sys.executable, "-c", "pass"])),
        "import_pyvfio_cli": timed(command([sys.executable, "-c", "import pyvfio.cli"])),
    }
    print(json.dumps(startup), flush=True)
    live: dict[str, object] = {"devices": len(os.listdir("/sys/bus/pci/devices"))}
    live["pyvfio_ls_json_command"] = timed(command([*PYVFIO, "ls", "--json"]))
    if lspci:
        live["lspci_D_nn_k"] = timed(command([lspci, "-D", "-nn", "-k"]))
    print(json.dumps(live), flush=True)
    first, last = sizes[0], sizes[-1]
    growth = {
        key: round(last[key]["best_ms"] / first[key]["best_ms"], 2)  # type: ignore[index]
        for key in ("pyvfio_ls_json_command", "pyvfio_ls_json_in_process", "lspci_same_tree")
        if key in first
    }
    result = {
        "schema": 1,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "load_average_before_after": [load_before, load_average()],
        "rounds": ROUNDS,
        "sizes": sizes,
        "growth_200_to_2000": growth,
        "live_host": live,
        "startup": startup,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
