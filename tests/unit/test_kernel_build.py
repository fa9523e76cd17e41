"""pyvfio.lab.kernel_build without building: the fragment, the cache key, the cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.lab import kernel_build as kb
from pyvfio.lab import kernels

# -- the fragment shipped with pyvfio ---------------------------------------------------

#: What the iommufd backend and the lab cannot do without; each is built in.
REQUIRED = (
    "IOMMUFD", "VFIO", "VFIO_DEVICE_CDEV", "VFIO_CONTAINER", "VFIO_IOMMU_TYPE1", "VFIO_PCI",
    "INTEL_IOMMU", "IRQ_REMAP", "PCI_MSI", "PCI_MMCONFIG", "ACPI", "BLK_DEV_NVME", "E1000E",
    "VIRTIO_PCI", "NET_9P", "NET_9P_VIRTIO", "9P_FS", "9P_FS_POSIX_ACL", "OVERLAY_FS", "TMPFS",
    "DEVTMPFS", "VIRTIO_CONSOLE", "SERIAL_8250_CONSOLE", "UNIX", "HUGETLBFS", "BLK_DEV_INITRD",
    "AMD_IOMMU", "VIRTIO_IOMMU", "ACPI_VIOT", "NUMA", "X86_64_ACPI_NUMA",
)  # fmt: skip


def test_shipped_fragment_builds_in_everything_the_lab_needs() -> None:
    fragment = kb.load_fragment()
    assert {f"CONFIG_{name}": "y" for name in REQUIRED}.items() <= fragment.items()


def test_shipped_fragment_has_no_modules_and_no_debug_info() -> None:
    fragment = kb.load_fragment()
    assert fragment["CONFIG_MODULES"] == "n"
    assert fragment["CONFIG_DEBUG_INFO"] == "n"
    assert "m" not in fragment.values()


def test_parse_config_reads_set_unset_and_values() -> None:
    text = (
        "# a comment\n"
        "\n"
        "CONFIG_A=y\n"
        "# CONFIG_B is not set\n"
        'CONFIG_C="string with = sign"\n'
        "CONFIG_D=0x10\n"
    )
    assert kb.parse_config(text, strict=True) == {
        "CONFIG_A": "y",
        "CONFIG_B": "n",
        "CONFIG_C": '"string with = sign"',
        "CONFIG_D": "0x10",
    }


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("CONFIG_A=y\nIOMMUFD=y\n", "line 2"),
        ("CONFIG_A=y\nCONFIG_A=n\n", "CONFIG_A is set twice"),
        ("CONFIG_A y\n", "line 1"),
    ],
)
def test_parse_config_strict_rejects_what_would_silently_drop_an_option(
    text: str, why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        kb.parse_config(text, strict=True)


def test_parse_config_lenient_skips_other_lines() -> None:
    # A real .config has headers like "# Automatically generated file; DO NOT EDIT."
    assert kb.parse_config("junk\nCONFIG_A=y\n") == {"CONFIG_A": "y"}


def test_load_fragment_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.config"
    bad.write_text("CONFIG_A=y\nVFIO=y\n")
    with pytest.raises(kb.KernelBuildError, match=r"bad\.config: line 2"):
        kb.load_fragment(bad)
    with pytest.raises(kb.KernelBuildError, match="cannot read"):
        kb.load_fragment(tmp_path / "missing.config")


# -- what the final .config must hold ----------------------------------------------------


def test_config_mismatches_names_dropped_and_changed_options() -> None:
    wanted = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "y", "CONFIG_D": "n"}
    final = {"CONFIG_A": "y", "CONFIG_C": "m", "CONFIG_D": "y"}  # B absent counts as n
    assert kb.config_mismatches(final, wanted) == [
        "CONFIG_C=y (the .config has CONFIG_C=m)",
        "CONFIG_D=n (the .config has CONFIG_D=y)",
    ]
    assert kb.config_mismatches({"CONFIG_A": "y", "CONFIG_C": "y"}, wanted) == []


# -- the cache key -----------------------------------------------------------------------


def test_config_hash_ignores_comments_and_order() -> None:
    one = kb.parse_config("# x\nCONFIG_A=y\n# CONFIG_B is not set\n", strict=True)
    two = kb.parse_config("# CONFIG_B is not set\n\n# y\nCONFIG_A=y\n", strict=True)
    assert kb.config_hash(one) == kb.config_hash(two)
    assert len(kb.config_hash(one)) == 12
    assert int(kb.config_hash(one), 16) >= 0


def test_config_hash_changes_with_any_value() -> None:
    base = {"CONFIG_A": "y", "CONFIG_B": "n"}
    hashes = {
        kb.config_hash(base),
        kb.config_hash({**base, "CONFIG_B": "y"}),
        kb.config_hash({**base, "CONFIG_C": "y"}),
        kb.config_hash({"CONFIG_A": "y"}),
    }
    assert len(hashes) == 4


def test_cache_key_is_source_version_then_config_hash() -> None:
    assert kb.cache_key("6.12.95-1~bpo12+1", "0123456789ab") == "6.12.95-1~bpo12+1-0123456789ab"


# -- the cache ---------------------------------------------------------------------------


def fake_build(cache: Path, version: str, config: str, built: str, *, image: bool = True) -> Path:
    directory = cache / kb.cache_key(version, config)
    directory.mkdir(parents=True)
    if image:
        (directory / "bzImage").write_bytes(b"\0" * 2048)
    (directory / "config").write_text("CONFIG_IOMMUFD=y\n")
    record = {
        "source_package": kb.SOURCE_PACKAGE,
        "source_version": version,
        "config_hash": config,
        "built": built,
        "seconds": 412.5,
        "objects": 1801,
    }
    (directory / "build.json").write_text(json.dumps(record))
    return directory


CURRENT = kb.config_hash(kb.load_fragment())


def test_cached_builds_newest_first_and_only_finished_ones(tmp_path: Path) -> None:
    fake_build(tmp_path, "6.12.90-1", CURRENT, "2026-01-01 10:00:00 UTC")
    fake_build(tmp_path, "6.12.95-1", "0123456789ab", "2026-02-01 10:00:00 UTC")
    fake_build(tmp_path, "6.12.96-1", CURRENT, "2026-03-01 10:00:00 UTC", image=False)
    (tmp_path / ".build-6.12.97-1-x").mkdir()  # a build under way
    (tmp_path / "apt").mkdir()  # the private apt setup
    builds = kb.cached_builds(tmp_path)
    assert [b.source_version for b in builds] == ["6.12.95-1", "6.12.90-1"]
    assert builds[0].image == tmp_path / "6.12.95-1-0123456789ab" / "bzImage"
    assert builds[0].size == 2048


def test_cached_builds_of_a_missing_cache_is_empty(tmp_path: Path) -> None:
    assert kb.cached_builds(tmp_path / "nothing") == []


def test_find_build_matches_the_current_fragment(tmp_path: Path) -> None:
    assert kb.find_build(tmp_path) is None
    fake_build(tmp_path, "6.12.95-1", "0123456789ab", "2026-02-01 10:00:00 UTC")
    assert kb.find_build(tmp_path) is None  # another config
    old = fake_build(tmp_path, "6.12.90-1", CURRENT, "2026-01-01 10:00:00 UTC")
    new = fake_build(tmp_path, "6.12.91-1", CURRENT, "2026-01-02 10:00:00 UTC")
    found = kb.find_build(tmp_path)
    assert found is not None and found.directory == new
    found = kb.find_build(tmp_path, source_version="6.12.90-1")
    assert found is not None and found.directory == old
    assert kb.find_build(tmp_path, source_version="6.12.99-1") is None


def test_build_str_and_json_say_what_and_where(tmp_path: Path) -> None:
    fake_build(tmp_path, "6.12.95-1", CURRENT, "2026-02-01 10:00:00 UTC")
    (build,) = kb.cached_builds(tmp_path)
    assert str(build).startswith(f"6.12.95-1-{CURRENT}: linux-source-6.12 6.12.95-1, config")
    assert "built 2026-02-01 10:00:00 UTC in 412 s" in str(build)
    data = build.to_json()
    assert data["image"] == str(build.image)
    assert data["size"] == 2048
    json.dumps(data)


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kb.default_cache_dir() == tmp_path / "pyvfio" / "kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert kb.default_cache_dir() == Path.home() / ".cache" / "pyvfio" / "kernels"


# -- resolve_kernel("iommufd") -----------------------------------------------------------


def test_resolve_kernel_iommufd_uses_the_cached_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    directory = fake_build(kb.default_cache_dir(), "6.12.95-1", CURRENT, "2026-02-01 10:00:00 UTC")

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached build must not be rebuilt")

    monkeypatch.setattr(kb, "build_kernel", no_build)
    assert kernels.resolve_kernel("iommufd") == directory / "bzImage"


def test_resolve_kernel_iommufd_builds_when_missing_and_explains_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kb, "missing_build_tools", lambda: ["bison", "flex"])
    with pytest.raises(kb.KernelBuildError, match="apt-get install bison flex"):
        kernels.resolve_kernel("iommufd")


def test_build_kernel_reports_kconfig_dropping_an_option(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Everything but make is faked: the .config lacks what the fragment asks for.
    fragment = tmp_path / "frag.config"
    fragment.write_text("CONFIG_IOMMUFD=y\nCONFIG_VFIO=y\n")
    deb = tmp_path / "linux-source.deb"
    monkeypatch.setattr(kb, "missing_build_tools", list)
    monkeypatch.setattr(kb, "_download_source", lambda cache: (deb, "6.12.95-1"))
    monkeypatch.setattr(kb, "_unpack", lambda deb, dest: dest.mkdir(parents=True))

    def fake_make(source: Path, targets: list[str], *, doing: str) -> None:
        (source / ".config").write_text("CONFIG_VFIO=y\n# CONFIG_IOMMUFD is not set\n")

    monkeypatch.setattr(kb, "_make", fake_make)
    stale = tmp_path / "cache" / ".build-6.12.90-1-0123456789ab-killed"
    (stale / "src").mkdir(parents=True)
    said: list[str] = []
    with pytest.raises(kb.KernelBuildError, match=r"CONFIG_IOMMUFD=y \(the \.config has"):
        kb.build_kernel(tmp_path / "cache", fragment_path=fragment, say=said.append)
    assert said[0] == "lab: kernel: fetching linux-source-6.12 from bookworm-backports"
    assert kb.cached_builds(tmp_path / "cache") == []
    # Neither this build's tree nor the one a killed build left behind remains.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".lock"]


# -- the CLI -----------------------------------------------------------------------------


def test_cli_kernel_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    runner = CliRunner()
    empty = runner.invoke(app, ["lab", "kernel", "list"])
    assert empty.exit_code == 0
    assert "no lab kernel in" in empty.output
    fake_build(kb.default_cache_dir(), "6.12.95-1", CURRENT, "2026-02-01 10:00:00 UTC")
    listed = runner.invoke(app, ["lab", "kernel", "list"])
    assert listed.output.startswith(f"* 6.12.95-1-{CURRENT}: ")
    as_json = json.loads(runner.invoke(app, ["lab", "kernel", "list", "--json"]).output)
    assert as_json["config_hash"] == CURRENT
    assert [b["source_version"] for b in as_json["builds"]] == ["6.12.95-1"]


# -- make's output, condensed ------------------------------------------------------------


def fake_make(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text("#!/bin/sh\n" + script)
    make.chmod(0o755)


def test_make_progress_is_a_line_every_n_objects(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_make(
        tmp_path / "bin",
        'i=0; while [ $i -lt 600 ]; do echo "  CC      obj$i.o"; echo "  AR      x.a";'
        " i=$((i+1)); done\n",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    said: list[str] = []
    count = kb._make_bzimage(
        tmp_path, 3, 0.0, said.append, expected=1000, failed_log=tmp_path / "failed.log"
    )
    assert count == 600
    assert [line.split(",")[0] for line in said] == [
        "lab: kernel: make: 250 of ~1000 objects (~25%)",
        "lab: kernel: make: 500 of ~1000 objects (~50%)",
        "lab: kernel: make: 600 objects compiled",
    ]
    assert (tmp_path / "build.log").read_text().count("  CC ") == 600


def test_make_failure_shows_the_errors_and_keeps_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_make(
        tmp_path / "bin",
        'echo "  CC      a.o"; echo "a.c:1:1: error: expected x"; echo "make: *** [a.o] Error 1";'
        " exit 2\n",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with pytest.raises(kb.KernelBuildError, match=r"exit 2\); full log in .*failed\.log") as info:
        kb._make_bzimage(
            tmp_path, 3, 0.0, lambda line: None, expected=10, failed_log=tmp_path / "failed.log"
        )
    assert "a.c:1:1: error: expected x" in str(info.value)
    assert "error: expected x" in (tmp_path / "failed.log").read_text()
