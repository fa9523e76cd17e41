"""Serve pyvfio requests as another user: ``python as_user.py UID GID HARD_MEMLOCK``.

Started as root, it sets RLIMIT_MEMLOCK's hard limit (what limits.conf would give the
user at login), drops every uid, gid and supplementary group, checks no capability is
left, then answers one JSON line per request read from stdin,
``{"address": BDF, "memlock": SOFT}``: with the soft limit set to SOFT (a user may
move it up to the hard one), it opens the edu device at BDF and does a DMA round trip.
One process serves a whole test module: a Python start-up in the TCG guest is slow.
Everything is imported before the drop, as the interpreter lives where only root may
read. Each answer carries ``"ok": true`` or the pyvfio error's type and message.
"""

from __future__ import annotations

import json
import os
import pwd  # noqa: F401 - used by pyvfio after the drop, imported while we may
import random
import resource
import sys
from typing import Any

from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers.edu import Edu
from pyvfio.errors import PyvfioError


def cap_eff() -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("CapEff:"))
    return int(line.split()[1], 16)


def round_trip(address: str, memlock: int) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, hard))
    payload = random.Random(7).randbytes(edu_mod.DMA_LIMIT)
    try:
        with Edu.open(address) as edu:
            dev = edu.device
            with (
                dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as out,
                dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as back,
            ):
                out.write(payload)
                edu.to_device(out)
                edu.from_device(back)
                same = back.read(0, edu_mod.DMA_LIMIT) == payload
            backend = dev.iommu.backend
    except PyvfioError as err:
        return {"ok": False, "error": type(err).__name__, "message": str(err)}
    return {"ok": True, "backend": backend, "round_trip": same}


def main() -> int:
    uid, gid, hard = (int(a) for a in sys.argv[1:4])
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    ids = {"uid": os.getresuid(), "gid": os.getresgid(), "cap_eff": cap_eff()}
    print(json.dumps(ids), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        print(json.dumps(round_trip(request["address"], request["memlock"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
