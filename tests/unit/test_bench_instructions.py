"""bench/floor.py and bench/instructions.py: the floor's ABI and loops, the stub, the counts.

The floor and pyvfio run here against bench/c/vfio_stub.c (a pretend VFIO, preloaded
into a child Python), so their code paths run without a device; nothing is timed.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyvfio._uapi import iommufd as ufd
from pyvfio._uapi import vfio as v

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import floor  # noqa: E402
import instructions  # noqa: E402

# -- the floor's copy of the kernel ABI, against pyvfio's one mirror of the headers -----


@pytest.mark.parametrize(
    ("name", "ours", "theirs"),
    [
        ("VFIO_SET_IOMMU", floor.VFIO_SET_IOMMU, v.VFIO_SET_IOMMU),
        ("VFIO_GROUP_SET_CONTAINER", floor.VFIO_GROUP_SET_CONTAINER, v.VFIO_GROUP_SET_CONTAINER),
        ("VFIO_GROUP_GET_DEVICE_FD", floor.VFIO_GROUP_GET_DEVICE_FD, v.VFIO_GROUP_GET_DEVICE_FD),
        (
            "VFIO_DEVICE_GET_REGION_INFO",
            floor.VFIO_DEVICE_GET_REGION_INFO,
            v.VFIO_DEVICE_GET_REGION_INFO,
        ),
        ("VFIO_DEVICE_SET_IRQS", floor.VFIO_DEVICE_SET_IRQS, v.VFIO_DEVICE_SET_IRQS),
        ("VFIO_IOMMU_MAP_DMA", floor.VFIO_IOMMU_MAP_DMA, v.VFIO_IOMMU_MAP_DMA),
        ("VFIO_IOMMU_UNMAP_DMA", floor.VFIO_IOMMU_UNMAP_DMA, v.VFIO_IOMMU_UNMAP_DMA),
        ("VFIO_DEVICE_BIND_IOMMUFD", floor.VFIO_DEVICE_BIND_IOMMUFD, v.VFIO_DEVICE_BIND_IOMMUFD),
        (
            "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            floor.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            v.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
        ),
        ("IOMMU_DESTROY", floor.IOMMU_DESTROY, ufd.IOMMU_DESTROY),
        ("IOMMU_IOAS_ALLOC", floor.IOMMU_IOAS_ALLOC, ufd.IOMMU_IOAS_ALLOC),
        ("IOMMU_IOAS_MAP", floor.IOMMU_IOAS_MAP, ufd.IOMMU_IOAS_MAP),
        ("IOMMU_IOAS_UNMAP", floor.IOMMU_IOAS_UNMAP, ufd.IOMMU_IOAS_UNMAP),
        ("VFIO_TYPE1v2_IOMMU", floor.VFIO_TYPE1v2_IOMMU, v.VfioExtension.VFIO_TYPE1v2_IOMMU),
        (
            "IOMMU_IOAS_MAP flags",
            floor.IOMMU_IOAS_MAP_FIXED_READ_WRITE,
            ufd.IommuIoasMapFlag.IOMMU_IOAS_MAP_FIXED_IOVA
            | ufd.IommuIoasMapFlag.IOMMU_IOAS_MAP_READABLE
            | ufd.IommuIoasMapFlag.IOMMU_IOAS_MAP_WRITEABLE,
        ),
    ],
)
def test_floor_ioctl_numbers_match_the_headers_mirror(name: str, ours: int, theirs: int) -> None:
    assert ours == int(theirs), name


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (floor.vfio_iommu_type1_dma_map, v.vfio_iommu_type1_dma_map),
        (floor.vfio_iommu_type1_dma_unmap, v.vfio_iommu_type1_dma_unmap),
        (floor.iommu_ioas_alloc, ufd.iommu_ioas_alloc),
        (floor.iommu_destroy, ufd.iommu_destroy),
        (floor.iommu_ioas_map, ufd.iommu_ioas_map),
        (floor.iommu_ioas_unmap, ufd.iommu_ioas_unmap),
        (floor.vfio_device_bind_iommufd, v.vfio_device_bind_iommufd),
        (floor.vfio_device_attach_iommufd_pt, v.vfio_device_attach_iommufd_pt),
        (floor.vfio_region_info, v.vfio_region_info),
    ],
)
def test_floor_structs_match_the_headers_mirror(ours: Any, theirs: Any) -> None:
    """Same size, and each field of ours at the offset of the field of that name."""
    assert ctypes.sizeof(ours) == ctypes.sizeof(theirs), ours.__name__
    for field, *_ in ours._fields_:
        assert getattr(ours, field).offset == getattr(theirs, field).offset, (
            ours.__name__,
            field,
        )


def test_floor_irq_set_is_vfio_irq_set_with_one_eventfd() -> None:
    assert ctypes.sizeof(floor.vfio_irq_set_one) == ctypes.sizeof(v.vfio_irq_set) + 4
    for field in ("argsz", "flags", "index", "start", "count"):
        assert (
            getattr(floor.vfio_irq_set_one, field).offset == getattr(v.vfio_irq_set, field).offset
        )


def test_floor_refuses_an_unknown_backend() -> None:
    with pytest.raises(ValueError, match="type1 or iommufd"):
        floor.FloorDevice("0000:00:10.0", "vfio-user")


def test_floor_names_a_missing_cdev(tmp_path: Path) -> None:
    (tmp_path / "sys/bus/pci/devices/0000:00:10.0").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"no VFIO cdev .*use --backend type1"):
        floor.vfio_cdev("0000:00:10.0", str(tmp_path))


# -- against the stub: the floor's and pyvfio's loops run, the stub answers both --------


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vfio_stub.so, built without warnings (valgrind's headers optional)."""
    folder = tmp_path_factory.mktemp("stub")
    lib = folder / "vfio_stub.so"
    built = subprocess.run(
        [
            "gcc",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-shared",
            "-fPIC",
            "-o",
            str(lib),
            str(BENCH / "c" / "vfio_stub.c"),
            "-ldl",
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    return lib


def run_stubbed(stub: Path, code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    root = tmp_path / "host"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(BENCH)!r})
        from pathlib import Path
        import instructions
        root = Path({str(root)!r})
        instructions.synthetic_host(root)
        """
    ) + textwrap.dedent(code)
    env = {**os.environ, "LD_PRELOAD": str(stub)}
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.needs_tool("gcc")
@pytest.mark.parametrize("backend", ["type1", "iommufd"])
def test_floor_loops_run_against_the_stub(stub: Path, tmp_path: Path, backend: str) -> None:
    done = run_stubbed(
        stub,
        f"""
        import json, struct
        from floor import FloorDevice, IOVA_EXTRA
        from primitives import anonymous_pages
        with FloorDevice(instructions.BDF, {backend!r}, str(root)) as dev:
            with anonymous_pages(2) as (_, pages):
                ops = dev.ops(pages, stand_in=True)
                for op in ops.values():
                    op(3)
                with dev.live_mappings(pages, 2):
                    dev.map_op(pages + 4096, IOVA_EXTRA)(2)
            assert dev.bar0 is not None
            ident, liveness = struct.unpack_from("<II", dev.bar0, 0)
            print(json.dumps([sorted(ops), ident, liveness, dev.ioas]))
        assert dev.bar0 is None and dev.eventfd == -1
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    names, ident, liveness, ioas = json.loads(done.stdout)
    assert names == sorted(instructions.OPS)
    # The stub's edu: the ID register reads edu's; write32's last store (i = 2) is there.
    assert ident == 0x010000ED and liveness == 2
    assert ioas == (1 if backend == "iommufd" else 0)


@pytest.mark.needs_tool("gcc")
@pytest.mark.parametrize("backend", ["type1", "iommufd"])
def test_instructions_inside_runs_both_sides_without_valgrind(
    stub: Path, tmp_path: Path, backend: str
) -> None:
    """The measured process itself (its client requests are no-ops outside valgrind)."""
    done = run_stubbed(
        stub,
        f"""
        instructions.inside({backend!r}, root, 3)
        print("done")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"


def test_inside_refuses_to_run_without_the_stub(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "instructions.py"),
            "--inside",
            "--backend",
            "type1",
            "--root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env={k: val for k, val in os.environ.items() if k != "LD_PRELOAD"},
    )
    assert done.returncode != 0
    assert "the VFIO stub is not preloaded" in done.stderr


# -- parsing callgrind's dumps and the report --------------------------------------------

DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 15743
cmd:  python bench/instructions.py --inside
part: 3

desc: I1 cache:
desc: Timerange: Basic block 0 - 1003
desc: Trigger: Client Request: floor/mmio_read32/1000

positions: line
events: Ir
summary: 563014

fn=(0) main
0 563014

totals: 563014
"""


def test_parse_dump_reads_the_label_and_the_total() -> None:
    assert instructions.parse_dump(DUMP) == ("floor/mmio_read32/1000", 563014)


def test_parse_dump_ignores_a_dump_that_is_not_a_window() -> None:
    final = DUMP.replace("desc: Trigger: Client Request: floor/mmio_read32/1000\n", "")
    assert instructions.parse_dump(final.replace("Trigger", "x")) is None
    assert instructions.parse_dump("desc: Trigger: Client Request: a/b/1\n") is None


def test_read_dumps_collects_every_window(tmp_path: Path) -> None:
    (tmp_path / "callgrind.out.7.1").write_text(DUMP)
    (tmp_path / "callgrind.out.7.2").write_text(
        DUMP.replace("floor/mmio_read32/1000", "floor/mmio_read32/2000").replace(
            "563014", "1126014"
        )
    )
    (tmp_path / "callgrind.out.7").write_text("summary: 0\ntotals: 0\n")  # the final dump
    assert instructions.read_dumps(tmp_path) == {
        "floor/mmio_read32/1000": 563014,
        "floor/mmio_read32/2000": 1126014,
    }


def windows(n: int, per: dict[tuple[str, str], int], fixed: int = 5000) -> dict[str, int]:
    counts = {}
    for (side, op), cost in per.items():
        counts[instructions.label(side, op, n)] = fixed + cost * n
        counts[instructions.label(side, op, 2 * n)] = fixed + cost * 2 * n
    return counts


def every_op(pyvfio: int, floor_cost: int) -> dict[tuple[str, str], int]:
    return {
        **{("pyvfio", op): pyvfio for op in instructions.OPS},
        **{("floor", op): floor_cost for op in instructions.OPS},
    }


def test_per_op_is_the_difference_of_the_windows() -> None:
    got = instructions.per_op(windows(100, every_op(3000, 500)), 100)
    assert list(got) == list(instructions.OPS)
    entry = got["mmio_read32"]
    assert entry["pyvfio"]["instructions_per_op"] == 3000.0
    assert entry["floor"]["instructions_per_op"] == 500.0
    assert entry["pyvfio"]["fixed"] == 5000 and entry["ratio_floor"] == 6.0
    assert entry["floor"]["windows"] == {"100": 5000 + 500 * 100, "200": 5000 + 500 * 200}


def test_per_op_says_which_window_is_missing() -> None:
    counts = windows(100, every_op(3000, 500))
    del counts["pyvfio/config_read32/200"]
    with pytest.raises(ValueError, match=r"no count for pyvfio config_read32 .*100 and 200"):
        instructions.per_op(counts, 100)


def test_loop_cost_when_measured_and_when_not() -> None:
    counts = windows(100, {("harness", "empty_loop"): 40})
    assert instructions.loop_cost(counts, 100) == 40.0
    assert instructions.loop_cost({}, 100) is None


def sample(backend: str = "type1") -> dict[str, Any]:
    return {
        "schema": instructions.SCHEMA,
        "backend": backend,
        "date": "2026-12-03T13:00:00+00:00",
        "src_commit": "4cdbd0d98efd",
        "commit": "4cdbd0d98efd",
        "python": "3.11.2",
        "valgrind": "valgrind-3.19.0",
        "iterations": 1000,
        "loop_instructions_per_op": 41.0,
        "ops": instructions.per_op(windows(1000, every_op(12345, 1000)), 1000),
    }


def test_table_has_a_row_per_op() -> None:
    rows = instructions.table(sample()).splitlines()
    assert rows[0] == "| primitive | pyvfio | floor | pyvfio / floor |"
    assert len(rows) == 2 + len(instructions.OPS)
    assert rows[2] == "| MMIO read32 (BAR0) | 12,345 | 1,000 | 12.3x |"


def test_section_names_backend_commit_and_loop() -> None:
    text = instructions.section(sample("iommufd"))
    assert text.startswith("### iommufd backend\n")
    assert "at commit 4cdbd0d98efd" in text and "windows of 1,000 and 2,000" in text
    assert "the loop's own 41 per turn" in text


def test_readme_block_is_replaced_in_place(tmp_path: Path) -> None:
    for backend in ("iommufd", "type1"):
        (tmp_path / f"instructions-{backend}.json").write_text(json.dumps(sample(backend)))
    block = instructions.render_block(instructions.load_results(tmp_path))
    assert block.index("### type1") < block.index("### iommufd")
    old = f"# Bench\n\n{instructions.BEGIN}\nstale\n{instructions.END}\n\n## Later\n"
    new = instructions.update_readme(old, block)
    assert "stale" not in new and new.endswith(instructions.END + "\n\n## Later\n")
    assert instructions.update_readme("# Bench\n", block) == f"# Bench\n\n{block}\n"


def test_the_readme_block_is_current() -> None:
    """bench/README.md shows what bench/results/instructions-*.json hold."""
    results = instructions.load_results(instructions.RESULTS)
    assert results, "no bench/results/instructions-*.json: run bench/instructions.py"
    assert instructions.render_block(results) in instructions.README.read_text()


@pytest.mark.needs_tool("valgrind")
@pytest.mark.needs_tool("gcc")
def test_a_short_callgrind_run_counts_every_op_of_both_sides(tmp_path: Path) -> None:
    """The whole tool, end to end, on few iterations (the counts are not asserted)."""
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "instructions.py"),
            "--backend",
            "type1",
            "--iterations",
            "300",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "instructions-type1.json").read_text())
    assert list(results["ops"]) == list(instructions.OPS)
    for entry in results["ops"].values():
        assert entry["floor"]["instructions_per_op"] > 0
        assert entry["pyvfio"]["instructions_per_op"] > 0 and entry["ratio_floor"] is not None
    assert results["loop_instructions_per_op"] > 0


def test_table_against_a_baseline_of_other_code(tmp_path: Path) -> None:
    """After a rewrite, the block shows the saved "before" beside the new counts."""
    before = {**sample(), "src_commit": "aaaaaaaaaaaa"}
    before["ops"] = instructions.per_op(windows(1000, every_op(24690, 1000)), 1000)
    (tmp_path / "instructions-type1-before.json").write_text(json.dumps(before))
    (tmp_path / "instructions-type1.json").write_text(json.dumps(sample()))
    (results,) = instructions.load_results(tmp_path)
    rows = instructions.table(results).splitlines()
    assert rows[0] == (
        "| primitive | pyvfio before (aaaaaaaaaaaa) | pyvfio | floor | pyvfio / floor "
        "| before / now |"
    )
    assert rows[1] == "| --- | ---: | ---: | ---: | ---: | ---: |"
    assert rows[2] == "| MMIO read32 (BAR0) | 24,690 | 12,345 | 1,000 | 12.3x | 2.0x |"
    assert "Before: pyvfio at commit aaaaaaaaaaaa" in instructions.section(results)
    assert "(`instructions-type1-before.json`)" in instructions.section(results)


def test_a_baseline_of_the_same_code_is_not_shown(tmp_path: Path) -> None:
    for name in ("instructions-type1.json", "instructions-type1-before.json"):
        (tmp_path / name).write_text(json.dumps(sample()))
    (results,) = instructions.load_results(tmp_path)
    assert "before" not in results
    assert instructions.table(results).splitlines()[0].startswith("| primitive | pyvfio | floor")
