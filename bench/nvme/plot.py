"""Draw IOPS against queue depth from a saved NVMe benchmark run (needs only matplotlib).

``python bench/nvme/plot.py [RESULTS.json [OUT.png]]``: defaults are the newest
``bench/nvme/results/nvme-*.json`` and ``bench/nvme/results/iops-vs-qd.png``. Without
matplotlib it says so and exits 0 (pyvfio does not depend on it; any Python with
matplotlib can draw the plot, e.g. Debian's python3-matplotlib).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PNG = RESULTS / "iops-vs-qd.png"


def plot(results: dict[str, Any], path: Path) -> bool:
    """Write the PNG; False (with a message) when matplotlib is missing."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("bench: matplotlib is not installed here: no plot (python3-matplotlib, or pip)")
        return False
    qds = [results["workloads"][n]["qd"] for n in results["sweep"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label in (
        ("kernel_driver", "kernel nvme + fio (MSI-X)"),
        ("pyvfio", "pyvfio, polled"),
        ("pyvfio_msix", "pyvfio, MSI-X"),
    ):
        if all(n in results.get(key, {}) for n in results["sweep"]):
            iops = [results[key][n]["iops"] for n in results["sweep"]]
            ax.plot(qds, iops, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(qds, [str(q) for q in qds])
    ax.set_xlabel("queue depth")
    ax.set_ylabel("IOPS, 4 KiB random read")
    ax.set_title(
        f"QEMU nvme in the lab guest ({results.get('accel', '?')}, {results['date'][:10]})"
    )
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv: list[str]) -> int:
    source = (
        Path(argv[0]) if argv else max(RESULTS.glob("nvme-*.json"), key=lambda p: p.stat().st_mtime)
    )
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_PNG
    if plot(json.loads(source.read_text()), out):
        print(f"bench: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
