"""Run pyvfio as another user: ``python as_user.py UID GID MEMLOCK ADDRESS``.

Started as root, it sets RLIMIT_MEMLOCK (what limits.conf would give the user at
login), drops every uid, gid and supplementary group, checks no capability is left,
then opens the edu device at ADDRESS and does a DMA round trip. Everything is
imported before the drop: the interpreter lives where only root may read.
Prints one JSON line; exit 0 on success, 3 on a pyvfio error (its type and message).
"""

from __future__ import annotations

import json
import os
import pwd  # noqa: F401 - used by pyvfio after the drop, imported while we may
import random
import resource
import sys

from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers.edu import Edu
from pyvfio.errors import PyvfioError


def cap_eff() -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("CapEff:"))
    return int(line.split()[1], 16)


def main() -> int:
    uid, gid, memlock = (int(a) for a in sys.argv[1:4])
    address = sys.argv[4]
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, memlock))
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    ids = {"uid": os.getresuid(), "gid": os.getresgid(), "cap_eff": cap_eff()}
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
        print(json.dumps({**ids, "error": type(err).__name__, "message": str(err)}))
        return 3
    print(json.dumps({**ids, "backend": backend, "round_trip": same}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
