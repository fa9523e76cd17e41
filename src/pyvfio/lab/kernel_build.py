"""Build the lab's own kernel: Debian's Linux 6.12 with IOMMUFD, everything built in.

Debian's packaged kernels lack ``CONFIG_IOMMUFD``, so the iommufd backend would only
ever meet header layouts.  This builds ``bzImage`` from Debian's ``linux-source-6.12``
(bookworm-backports) with a private apt setup (nothing of the system's apt
configuration changes, nothing is installed), configured by ``make allnoconfig`` plus
the fragment kept in this package (``kernel/pyvfio-lab.config``).  Every value of the
fragment is checked in the final ``.config``: Kconfig silently drops an option whose
dependencies are off, and a kernel without IOMMUFD would only fail later, in the guest.

Builds are cached in ``~/.cache/pyvfio/kernels/<source version>-<config hash>/``
(``bzImage``, ``config``, ``build.json``): a new source version or a changed fragment
makes a new build, the same pair never builds twice.  The source tree and the objects
are removed after a build (1.6 GB + 0.4 GB); the downloaded package stays in the apt
cache, and unpacking it again takes seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pyvfio.errors import LabUnavailableError
from pyvfio.lab import debian
from pyvfio.lab.debian import DEBIAN_MIRROR, DEBIAN_SUITE, updated_apt

SOURCE_PACKAGE: Final = "linux-source-6.12"
#: The fragment shipped with pyvfio.
FRAGMENT: Final = Path(__file__).with_name("kernel") / "pyvfio-lab.config"
#: How a fragment becomes a kernel; part of the cache key, so changing it rebuilds.
RECIPE: Final = "make allnoconfig KCONFIG_ALLCONFIG=fragment; make bzImage"
#: Seconds one make step may take (a cold build takes minutes on 2 cores).
_MAKE_TIMEOUT = 3600
_APT_TIMEOUT = 900
#: make's progress is shown every this many compiled objects.
PROGRESS_EVERY: Final = 250
#: Objects (CC and AS steps) of a build of the shipped fragment, for the progress
#: line until the cache holds a build that counted its own.
EXPECTED_OBJECTS: Final = 1330

# Tools the build runs, and the Debian package that has each.
_TOOLS: Final = {
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
    "tar": "tar",
    "xz": "xz-utils",
    "make": "make",
    "gcc": "gcc",
    "bison": "bison",
    "flex": "flex",
    "bc": "bc",
    "perl": "perl",
}
# objtool (x86_64's stack validation and ORC unwinder) links libelf.
_HEADERS: Final = {Path("/usr/include/libelf.h"): "libelf-dev"}

Say = Callable[[str], None]


class KernelBuildError(LabUnavailableError):
    """The lab kernel cannot be built here: the message says why and what to do."""


@dataclass(frozen=True)
class KernelBuild:
    """One cached build of the lab kernel."""

    directory: Path
    source_package: str
    source_version: str
    config_hash: str
    built: str
    seconds: float
    objects: int

    @property
    def key(self) -> str:
        return self.directory.name

    @property
    def image(self) -> Path:
        return self.directory / "bzImage"

    @property
    def config(self) -> Path:
        return self.directory / "config"

    @property
    def size(self) -> int:
        return self.image.stat().st_size

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = asdict(self)
        data.update(directory=str(self.directory), image=str(self.image), size=self.size)
        return data

    def __str__(self) -> str:
        return (
            f"{self.key}: {self.source_package} {self.source_version}, config {self.config_hash}, "
            f"bzImage {self.size / 2**20:.1f} MiB, built {self.built} in {self.seconds:.0f} s"
        )


# -- the config fragment ----------------------------------------------------------------

_SET = re.compile(r"(CONFIG_\w+)=(.*)")
_UNSET = re.compile(r"# (CONFIG_\w+) is not set")


def parse_config(text: str, *, strict: bool = False) -> dict[str, str]:
    """``{"CONFIG_FOO": "y", "CONFIG_BAR": "n", ...}`` from a .config or a fragment.

    ``# CONFIG_BAR is not set`` reads as ``"n"``.  With ``strict`` (fragments), any
    other line that is not blank or a ``#`` comment is an error, and so is a name given
    twice: a typo must not silently leave an option out.
    """
    options: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        match = _SET.fullmatch(line)
        unset = _UNSET.fullmatch(line)
        if match:
            name, value = match.group(1), match.group(2)
        elif unset:
            name, value = unset.group(1), "n"
        elif not strict or not line or line.startswith("#"):
            continue
        else:
            raise ValueError(
                f"line {number}: {raw!r} is neither CONFIG_NAME=value, "
                f"'# CONFIG_NAME is not set' nor a comment"
            )
        if strict and name in options:
            raise ValueError(f"line {number}: {name} is set twice")
        options[name] = value
    return options


def config_hash(fragment: Mapping[str, str]) -> str:
    """12 hex digits naming what the fragment asks for (comments and order do not count)."""
    canonical = "\n".join([RECIPE, *(f"{k}={v}" for k, v in sorted(fragment.items()))])
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_fragment(path: Path = FRAGMENT) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as err:
        raise KernelBuildError(
            f"cannot read the lab kernel's config fragment {path}: {err}"
        ) from err
    try:
        return parse_config(text, strict=True)
    except ValueError as err:
        raise KernelBuildError(f"{path}: {err}") from err


def config_mismatches(config: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """The fragment's options the final .config does not have, one line each."""
    wrong = []
    for name, value in wanted.items():
        got = config.get(name, "n")
        if got != value:
            wrong.append(f"{name}={value} (the .config has {name}={got})")
    return wrong


def cache_key(source_version: str, config: str) -> str:
    """The cache folder's name: ``6.12.95-1~bpo12+1-0123456789ab``."""
    return f"{source_version}-{config}"


# -- the cache ------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pyvfio/kernels``, ``~/.cache/pyvfio/kernels`` without it."""
    return debian.cache_dir("kernels")


def _read_build(directory: Path) -> KernelBuild | None:
    try:
        data = json.loads((directory / "build.json").read_text())
        build = KernelBuild(
            directory=directory,
            source_package=str(data["source_package"]),
            source_version=str(data["source_version"]),
            config_hash=str(data["config_hash"]),
            built=str(data["built"]),
            seconds=float(data["seconds"]),
            objects=int(data["objects"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not a finished build: the build renames its folder in last
    return build if build.image.is_file() else None


def cached_builds(cache_dir: Path | None = None) -> list[KernelBuild]:
    """Finished builds in the cache, newest first."""
    cache = cache_dir or default_cache_dir()
    if not cache.is_dir():
        return []
    builds = [
        build
        for directory in cache.iterdir()
        if directory.is_dir() and not directory.name.startswith(".")
        if (build := _read_build(directory)) is not None
    ]
    return sorted(builds, key=lambda build: build.built, reverse=True)


def find_build(
    cache_dir: Path | None = None,
    *,
    fragment: Mapping[str, str] | None = None,
    source_version: str | None = None,
) -> KernelBuild | None:
    """The newest cached build of ``fragment`` (and ``source_version``, if given)."""
    wanted = config_hash(load_fragment() if fragment is None else fragment)
    for build in cached_builds(cache_dir):
        if build.config_hash == wanted and source_version in (None, build.source_version):
            return build
    return None


# -- building -------------------------------------------------------------------------


def missing_build_tools() -> list[str]:
    """Debian packages the build needs that are not installed."""
    missing = {package for tool, package in _TOOLS.items() if shutil.which(tool) is None}
    missing.update(package for header, package in _HEADERS.items() if not header.is_file())
    return sorted(missing)


def _say_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def lab_kernel(cache_dir: Path | None = None, *, say: Say = _say_stderr) -> KernelBuild:
    """The cached build of the current fragment, built first if there is none.

    A cached build is used without asking the network whether a newer source exists;
    ``pyvfio lab kernel build`` asks.
    """
    found = find_build(cache_dir)
    if found is not None:
        return found
    say(
        "lab: kernel: no cached build of the lab kernel (IOMMUFD); building it once "
        "(about 8 minutes on 2 cores)"
    )
    return build_kernel(cache_dir, say=say)


def build_kernel(
    cache_dir: Path | None = None,
    *,
    fragment_path: Path = FRAGMENT,
    jobs: int = 3,
    force: bool = False,
    say: Say = _say_stderr,
) -> KernelBuild:
    """Fetch the newest source, and build it with the fragment unless that is cached.

    ``say`` receives one line per phase and make's progress.  Raises KernelBuildError
    with the reason (and the fix) when a tool, the network or the build fails.
    """
    cache = cache_dir or default_cache_dir()
    missing = missing_build_tools()
    if missing:
        raise KernelBuildError(
            f"building the lab kernel needs {', '.join(missing)}: apt-get install "
            f"{' '.join(missing)} (or run bash scripts/setup.sh)"
        )
    fragment = load_fragment(fragment_path)
    wanted = config_hash(fragment)
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache, say):
        for stale in cache.glob(".build-*"):  # left by a killed build: we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        start = time.monotonic()
        say(f"lab: kernel: fetching {SOURCE_PACKAGE} from {DEBIAN_SUITE}")
        deb, version = _download_source(cache)
        if not force and (found := find_build(cache, fragment=fragment, source_version=version)):
            say(f"lab: kernel: cached: {found}")
            return found
        key = cache_key(version, wanted)
        work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache))
        try:
            build = _build(deb, version, fragment, wanted, work, jobs, start, say)
            final = cache / key
            if final.exists():  # --force, or a build whose record was lost
                shutil.rmtree(final)
            build.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    result = _read_build(final)
    if result is None:  # pragma: no cover - _build wrote both files
        raise KernelBuildError(f"the build finished but {final} is incomplete")
    say(f"lab: kernel: done: {result}")
    return result


@contextlib.contextmanager
def _locked(cache: Path, say: Say) -> Iterator[None]:
    """One build at a time per cache (two pytest runs may ask at once)."""
    with open(cache / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("lab: kernel: another build is running; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(
    deb: Path,
    version: str,
    fragment: Mapping[str, str],
    wanted: str,
    work: Path,
    jobs: int,
    start: float,
    say: Say,
) -> Path:
    """Unpack, configure, make; returns the folder holding the finished build."""
    source = work / "src"
    say(f"lab: kernel: unpacking {deb.name}")
    _unpack(deb, source)

    say(f"lab: kernel: configuring (allnoconfig + {len(fragment)} options)")
    allconfig = work / "fragment.config"
    allconfig.write_text("".join(_config_line(k, v) for k, v in fragment.items()))
    _make(source, ["allnoconfig", f"KCONFIG_ALLCONFIG={allconfig}"], doing="make allnoconfig")
    config_text = (source / ".config").read_text()
    wrong = config_mismatches(parse_config(config_text), fragment)
    if wrong:
        raise KernelBuildError(
            f"Kconfig dropped {len(wrong)} option(s) of {FRAGMENT.name}: "
            + "; ".join(wrong)
            + ". Add the options they depend on to the fragment (see their Kconfig 'depends on')"
        )

    say(f"lab: kernel: make -j{jobs} bzImage (nice 19)")
    earlier = [build.objects for build in cached_builds(work.parent) if build.objects]
    objects = _make_bzimage(
        source,
        jobs,
        start,
        say,
        expected=earlier[0] if earlier else EXPECTED_OBJECTS,
        failed_log=work.parent / "last-build.log",
    )

    out = work / "out"
    out.mkdir()
    shutil.copy2(source / "arch" / "x86" / "boot" / "bzImage", out / "bzImage")
    (out / "config").write_text(config_text)
    record = {
        "source_package": SOURCE_PACKAGE,
        "source_version": version,
        "config_hash": wanted,
        "built": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "seconds": round(time.monotonic() - start, 1),
        "objects": objects,
    }
    (out / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def _config_line(name: str, value: str) -> str:
    return f"# {name} is not set\n" if value == "n" else f"{name}={value}\n"


def _make_bzimage(
    source: Path, jobs: int, start: float, say: Say, *, expected: int, failed_log: Path
) -> int:
    """Run make, saying how far it got every PROGRESS_EVERY objects; returns their count.

    ``expected`` is the count an earlier build reached: progress says "about N%".
    """
    argv = ["nice", "-n", "19", "make", f"-j{jobs}", "bzImage"]
    log = source / "build.log"
    objects = 0
    tail: list[str] = []
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            argv,
            cwd=source,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_file.write(line)
                tail = [*tail[-39:], line.rstrip()]
                if line.startswith(("  CC ", "  AS ")):
                    objects += 1
                    if objects % PROGRESS_EVERY == 0:
                        done = min(99, 100 * objects // max(expected, 1))
                        say(
                            f"lab: kernel: make: {objects} of ~{expected} objects "
                            f"(~{done}%), {_elapsed(start)}"
                        )
            returncode = proc.wait(timeout=_MAKE_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if returncode != 0:
        shutil.copy2(log, failed_log)
        errors = [line for line in tail if "error" in line.lower()] or tail[-15:]
        raise KernelBuildError(
            f"make bzImage failed (exit {returncode}); full log in {failed_log}:\n"
            + "\n".join(errors)
        )
    say(f"lab: kernel: make: {objects} objects compiled, {_elapsed(start)}")
    return objects


def _elapsed(start: float) -> str:
    seconds = int(time.monotonic() - start)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _make(source: Path, targets: list[str], *, doing: str) -> None:
    _run(["make", *targets], doing=doing, cwd=source, timeout=_MAKE_TIMEOUT)


def _unpack(deb: Path, dest: Path) -> None:
    """Stream the package's source tarball out of the .deb straight into ``dest``."""
    dest.mkdir(parents=True)
    member = f"./usr/src/{SOURCE_PACKAGE}.tar.xz"
    with (
        subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE
        ) as deb_tar,
        subprocess.Popen(
            ["tar", "-xOf", "-", member], stdin=deb_tar.stdout, stdout=subprocess.PIPE
        ) as source_tar,
    ):
        assert deb_tar.stdout is not None and source_tar.stdout is not None
        deb_tar.stdout.close()  # tar holds it; a failing reader then stops dpkg-deb
        done = subprocess.run(
            ["nice", "-n", "19", "tar", "-xJf", "-", "-C", str(dest), "--strip-components=1"],
            stdin=source_tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        source_tar.stdout.close()
    failed = [
        f"{name} exited with {code}"
        for name, code in (
            ("dpkg-deb", deb_tar.returncode),
            ("tar (package)", source_tar.returncode),
            ("tar (source)", done.returncode),
        )
        if code != 0
    ]
    if failed or not (dest / "Makefile").is_file():
        raise KernelBuildError(
            f"unpacking {member} from {deb} failed: {', '.join(failed) or 'no Makefile'} "
            f"{done.stderr.strip()}; delete {deb} to download it again"
        )


# -- the source package, through a private apt setup ----------------------------------


def _download_source(cache: Path) -> tuple[Path, str]:
    """The suite's newest source package (downloaded unless apt has it); (deb, version)."""
    apt = updated_apt(cache / "apt", "pyvfio-kernel", timeout=_APT_TIMEOUT, error=KernelBuildError)
    policy = _run(
        ["apt-cache", *apt, "policy", SOURCE_PACKAGE], doing="apt-cache policy", timeout=60
    )
    match = re.search(r"Candidate:\s*(\S+)", policy)
    if not match or match.group(1) == "(none)":
        raise KernelBuildError(f"{DEBIAN_SUITE} has no {SOURCE_PACKAGE}:\n{policy.strip()}")
    version = match.group(1)
    # apt-get download (unlike install) ignores dependencies, which this private
    # setup cannot resolve; apt names the file with an epoch's colon as %3a.
    archives = cache / "apt" / "cache" / "archives"
    pattern = f"{SOURCE_PACKAGE}_{version.replace(':', '%3a')}_*.deb"
    if not any(archives.glob(pattern)):
        _run(
            ["apt-get", *apt, "download", f"{SOURCE_PACKAGE}={version}"],
            doing=f"apt-get download {SOURCE_PACKAGE}={version} from {DEBIAN_MIRROR}",
            timeout=_APT_TIMEOUT,
            cwd=archives,
        )
    debs = sorted(archives.glob(pattern))
    if not debs:
        raise KernelBuildError(
            f"apt-get reported success but no {SOURCE_PACKAGE} {version} .deb is in {archives}"
        )
    return debs[-1], version


def _run(command: list[str], *, doing: str, timeout: float, cwd: Path | None = None) -> str:
    return debian.run(command, doing=doing, timeout=timeout, error=KernelBuildError, cwd=cwd)
