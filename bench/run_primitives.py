"""Measure pyvfio against C on VFIO primitives in the lab; save the results and the README table.

Run from the checkout: ``.venv/bin/python bench/run_primitives.py`` (root, for QEMU and
the lab). It builds ``bench/c/vfio_prims.c`` on the host into the lab's scratch folder,
boots the lab guest with one edu device, runs ``bench/primitives.py`` in it, saves
``bench/results/primitives-<backend>.json`` and rewrites the table block of
``bench/README.md`` from every results file there.

``--kernel`` boots another kernel (``iommufd``, the lab's build, or a bzImage) and
``--backend`` picks the IOMMU backend of both sides, so an iommufd run on a kernel that
has it lands beside the type1 one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import primitives_report as report
from primitives import C_SOURCE, CFLAGS, compiler_line

from pyvfio.errors import LabError
from pyvfio.lab import runner
from pyvfio.lab.topology import Topology

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
RESULTS = HERE / "results"
README = HERE / "README.md"


def build(scratch: Path) -> tuple[Path, str]:
    """vfio_prims built with the host's gcc (the guest shares its root, so it runs there)."""
    binary = scratch / "vfio_prims"
    subprocess.run(["gcc", *CFLAGS, "-o", str(binary), str(C_SOURCE)], check=True)
    return binary, compiler_line("gcc")


def host_conditions() -> dict[str, Any]:
    """What the host was and how busy: the lab's figures move with its load."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return {"cpu": model, "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def checkout_commit() -> str | None:
    """The commit the guest ran (with ``+dirty`` when the work tree had changes)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(CHECKOUT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(CHECKOUT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def regenerate_readme() -> None:
    block = report.render_block(report.load_results(RESULTS))
    README.write_text(report.update_readme(README.read_text() if README.exists() else "", block))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="type1", choices=("type1", "iommufd"))
    parser.add_argument(
        "--kernel", default="stock", help="stock, iommufd (the lab's build) or a bzImage path"
    )
    parser.add_argument("--accel", choices=("kvm", "tcg"), help="default: KVM when usable")
    parser.add_argument("--budget-ms", type=int, default=2000, help="time per operation and side")
    parser.add_argument(
        "--repeat", type=int, default=2, help="alternate the two sides this many times"
    )
    parser.add_argument("--timeout", type=float, default=2400, help="seconds for the whole run")
    parser.add_argument(
        "--readme-only", action="store_true", help="only rewrite the README from bench/results"
    )
    args = parser.parse_args(argv)
    if args.readme_only:
        regenerate_readme()
        print(f"bench: rewrote {README}")
        return 0

    out_name = f"primitives-{args.backend}.json"
    host_before = host_conditions()
    commit = checkout_commit()
    with runner.scratch_dir() as scratch:
        binary, cc = build(scratch)
        print(f"bench: built {binary} ({cc})", flush=True)
        command = shlex.join(
            [
                "python",
                str(HERE / "primitives.py"),
                "--out",
                str(scratch / out_name),
                "--backend",
                args.backend,
                "--budget-ms",
                str(args.budget_ms),
                "--repeat",
                str(args.repeat),
                "--c-binary",
                str(binary),
                "--cc",
                cc,
            ]
        )
        try:
            result = runner.run(
                command,
                Topology(devices=("edu",), kernel=args.kernel),
                kernel=args.kernel,
                accel=args.accel,
                timeout=args.timeout,
                cwd=CHECKOUT,
                on_output=lambda line: print(f"  | {line}", flush=True),
                scratch=scratch,
            )
        except LabError as err:
            print(f"bench: {err}", file=sys.stderr)
            return 1
        print(f"bench: guest {result}", flush=True)
        produced = scratch / out_name
        if result.returncode != 0 or not produced.exists():
            print(f"bench: the guest run failed ({result}); nothing saved", file=sys.stderr)
            return 1
        results = json.loads(produced.read_text())
    results["host"] = {**host_before, "loadavg_after": host_conditions()["loadavg"]}
    results["commit"] = commit

    RESULTS.mkdir(exist_ok=True)
    saved = RESULTS / out_name
    saved.write_text(json.dumps(results, indent=1) + "\n")
    regenerate_readme()
    print(f"bench: saved {saved.relative_to(CHECKOUT)}; README table:\n")
    print(report.table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
