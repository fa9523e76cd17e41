"""``pyvfio lab kernel ...``: build and list the lab's own kernel (IOMMUFD)."""

from __future__ import annotations

from typing import Annotated

import typer

from pyvfio.cli.common import JsonOpt, handle_errors, lab_app, print_json

kernel_app = typer.Typer(
    help="The lab kernel with IOMMUFD, built from Debian's linux-source.\n\n"
    "Example: pyvfio lab kernel list",
    no_args_is_help=True,
)
lab_app.add_typer(kernel_app, name="kernel")


@kernel_app.command("build")
@handle_errors
def kernel_build(
    force: Annotated[bool, typer.Option(help="rebuild even if the cache has this build")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="make -j", min=1)] = 3,
) -> None:
    """Fetch the newest linux-source-6.12 and build the lab kernel unless it is cached.

    Example: pyvfio lab kernel build
    """
    from pyvfio.lab.kernel_build import build_kernel

    build = build_kernel(force=force, jobs=jobs, say=lambda line: print(line, flush=True))
    print(build.image)


@kernel_app.command("list")
@handle_errors
def kernel_list(
    as_json: JsonOpt = False,
) -> None:
    """Cached builds of the lab kernel, newest first; * marks the current config's.

    Example: pyvfio lab kernel list --json
    """
    from pyvfio.lab.kernel_build import cached_builds, config_hash, default_cache_dir, load_fragment

    current = config_hash(load_fragment())
    builds = cached_builds()
    if as_json:
        print_json(
            {
                "cache": str(default_cache_dir()),
                "config_hash": current,
                "builds": [build.to_json() for build in builds],
            }
        )
        return
    if not builds:
        print(f"no lab kernel in {default_cache_dir()}: pyvfio lab kernel build")
        return
    for build in builds:
        print(f"{'*' if build.config_hash == current else ' '} {build}")
