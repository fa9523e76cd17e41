"""Moved to `pyvfio.testing`; this old path re-exports it."""

from pyvfio.testing import *  # noqa: F403
from pyvfio.testing import __all__ as __all__
