from pyvfio.cli import main

main()
