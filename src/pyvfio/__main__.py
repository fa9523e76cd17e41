"""``python -m pyvfio``: the same command as ``pyvfio``."""

from pyvfio.cli import main

main()
