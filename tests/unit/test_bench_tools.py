"""bench/primitives_report.py: ratios, the C program's JSON, the README table (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import primitives_report as report  # noqa: E402


def result(ns: float) -> dict[str, Any]:
    return {"ns_per_op": ns, "best_ns_per_op": ns, "iterations": 10, "rounds": 5, "batch": 2}


def sample(backend: str = "type1") -> dict[str, Any]:
    names = report.op_names()
    mine = {name: result(1000.0 * (i + 1)) for i, name in enumerate(names)}
    base = {name: result(500.0) for name in names}
    theirs = {name: result(100.0) for name in names}
    return {
        "backend": backend,
        "accel": "tcg",
        "kernel": "6.1.0-56-amd64",
        "date": "2026-11-25T13:00:00+00:00",
        "python": "3.11.7",
        "cc": "gcc 12 -O2",
        "budget_ms": 2000,
        "rounds": 5,
        "ops": report.combine(mine, base, theirs, names),
    }


def test_op_names_cover_the_fixed_ops_then_each_live_count() -> None:
    assert report.op_names((1, 1000)) == [
        "mmio_read32",
        "mmio_write32",
        "config_read32",
        "dma_map_unmap_4k",
        "irq_round_trip",
        "map_unmap_live_1",
        "map_unmap_live_1000",
    ]


def test_describe_names_live_counts_readably() -> None:
    assert report.describe("map_unmap_live_30000").endswith("with 30,000 live mappings")
    assert report.describe("map_unmap_live_1").endswith("with 1 live mapping")
    assert report.describe("something_new") == "something_new"


def test_combine_gives_the_pyvfio_over_c_and_over_floor_ratios() -> None:
    (op,) = report.combine(
        {"x": result(2500.0)}, {"x": result(1000.0)}, {"x": result(100.0)}, ["x"]
    )
    assert op["ratio"] == 25.0 and op["ratio_floor"] == 2.5
    assert op["pyvfio"]["ns_per_op"] == 2500.0 and op["c"]["ns_per_op"] == 100.0
    assert op["floor"]["ns_per_op"] == 1000.0


def test_combine_takes_the_ratio_of_the_best_batches() -> None:
    mine = {**result(5000.0), "best_ns_per_op": 3000.0}
    theirs = {**result(200.0), "best_ns_per_op": 100.0}
    base = {**result(900.0), "best_ns_per_op": 600.0}
    (op,) = report.combine({"x": mine}, {"x": base}, {"x": theirs}, ["x"])
    assert op["ratio"] == 30.0 and op["ratio_floor"] == 5.0


def test_combine_keeps_an_op_one_side_lacks_without_a_ratio() -> None:
    ops = report.combine({"x": result(1.0)}, {}, {"x": result(1.0)}, ["x", "y"])
    assert [(o["name"], o["ratio_floor"], o["floor"]) for o in ops] == [
        ("x", None, None),
        ("y", None, None),
    ]
    assert [(o["name"], o["ratio"], o["c"]) for o in ops] == [
        ("x", 1.0, ops[0]["c"]),
        ("y", None, None),
    ]


def test_merge_repeats_keeps_the_fastest_repeat_and_every_best() -> None:
    first = {"a": {**result(50.0), "best_ns_per_op": 40.0}, "b": result(10.0)}
    second = {"a": {**result(60.0), "best_ns_per_op": 30.0}, "b": result(20.0), "c": result(5.0)}
    merged = report.merge_repeats([first, second])
    assert list(merged) == ["a", "b", "c"]
    assert merged["a"]["best_ns_per_op"] == 30.0 and merged["a"]["ns_per_op"] == 60.0
    assert merged["a"]["best_ns_by_repeat"] == [40.0, 30.0]
    assert merged["b"]["best_ns_by_repeat"] == [10.0, 20.0] and merged["b"]["ns_per_op"] == 10.0
    assert merged["c"]["best_ns_by_repeat"] == [5.0]


def test_section_names_the_repeats() -> None:
    assert "best of 5 batches in each of 3 alternating repeats," in report.section(
        {**sample(), "repeats": 3}
    )
    assert "best of 5 batches, about" in report.section(sample())


def test_parse_c_output_reads_the_json_object() -> None:
    text = json.dumps({"tool": "c", "ops": {"mmio_read32": result(40.0)}})
    assert report.parse_c_output(text)["ops"]["mmio_read32"]["ns_per_op"] == 40.0


@pytest.mark.parametrize(
    ("text", "says"),
    [("", "no JSON"), ('{"ops": {', "malformed"), ('{"tool": "c"}', "no 'ops'")],
)
def test_parse_c_output_explains_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        report.parse_c_output(text)


def test_table_has_a_row_per_op_with_units_and_ratios() -> None:
    rows = report.table(sample()).splitlines()
    assert rows[0] == "| operation | pyvfio | floor | C | pyvfio / floor | pyvfio / C |"
    assert len(rows) == 2 + len(report.op_names())
    assert rows[2] == (
        "| 32-bit MMIO read of BAR0 (edu ID register) | 1,000 ns | 500 ns | 100 ns | 2.0x | 10.0x |"
    )
    assert rows[3].startswith("| 32-bit MMIO write of BAR0 (edu liveness register) | 2,000 ns")
    assert rows[-1].endswith(
        "with 30,000 live mappings | 8,000 ns | 500 ns | 100 ns | 16.0x | 80.0x |"
    )


def test_table_of_a_results_file_from_before_the_floor() -> None:
    """Schema 1 files (no floor side) still render, the floor's cells n/a."""
    results = sample()
    for op in results["ops"]:
        del op["floor"], op["ratio_floor"]
    row = report.table(results).splitlines()[2]
    assert row.endswith("| 1,000 ns | n/a | 100 ns | n/a | 10.0x |")


@pytest.mark.parametrize(
    ("ns", "shown"),
    [
        (None, "n/a"),
        (40.4, "40 ns"),
        (9_999.0, "9,999 ns"),
        (58_250.0, "58.2 µs"),
        (1_512_322.0, "1,512 µs"),
    ],
)
def test_format_ns_picks_the_unit(ns: float | None, shown: str) -> None:
    assert report.format_ns(ns) == shown


@pytest.mark.parametrize(("ratio", "shown"), [(None, "n/a"), (1.234, "1.2x"), (1122.7, "1,123x")])
def test_format_ratio_drops_decimals_when_large(ratio: float | None, shown: str) -> None:
    assert report.format_ratio(ratio) == shown


def test_table_shows_a_missing_side_as_na() -> None:
    results = sample()
    results["ops"][0]["c"] = None
    results["ops"][0]["ratio"] = None
    assert (
        report.table(results).splitlines()[2].endswith("| 1,000 ns | 500 ns | n/a | 2.0x | n/a |")
    )


def test_section_names_backend_and_accelerator() -> None:
    text = report.section(sample())
    assert text.startswith("### type1 backend, TCG")
    assert "Kernel 6.1.0-56-amd64" in text and "about 2 s per operation" in text


def test_section_mentions_the_host_load_when_recorded() -> None:
    results = {
        **sample(),
        "host": {
            "cpu": "AMD EPYC",
            "cpus": 2,
            "loadavg": [7.5, 1, 1],
            "loadavg_after": [9.25, 1, 1],
        },
    }
    assert "load average 7.5 before and 9.25 after" in report.section(results)


def test_update_readme_replaces_only_the_generated_block() -> None:
    old = f"# Bench\n\nintro\n\n{report.BEGIN}\nstale\n{report.END}\n\n## Later\n"
    new = report.update_readme(old, report.render_block([sample()]))
    assert new.startswith("# Bench\n\nintro\n\n" + report.BEGIN)
    assert new.endswith(report.END + "\n\n## Later\n")
    assert "stale" not in new and "### type1 backend, TCG" in new


def test_update_readme_appends_the_block_when_missing() -> None:
    new = report.update_readme("# Bench\n", report.render_block([]))
    empty = "No results yet: run bench/run_primitives.py."
    assert new == f"# Bench\n\n{report.BEGIN}\n\n{empty}\n\n{report.END}\n"


def test_load_results_puts_type1_first(tmp_path: Path) -> None:
    for backend in ("iommufd", "type1"):
        (tmp_path / f"primitives-{backend}.json").write_text(json.dumps(sample(backend)))
    (tmp_path / "other.json").write_text("{}")
    assert [r["backend"] for r in report.load_results(tmp_path)] == ["type1", "iommufd"]


@pytest.mark.needs_tool("gcc")  # to build bench/c/vfio_prims.c
def test_vfio_prims_builds_without_warnings(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            "gcc",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
            str(tmp_path / "vfio_prims"),
            str(BENCH / "c" / "vfio_prims.c"),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    usage = subprocess.run([str(tmp_path / "vfio_prims")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: vfio_prims" in usage.stderr
