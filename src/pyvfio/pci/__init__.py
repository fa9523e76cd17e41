"""PCI as the specification and lspci see it: addresses, configuration space, names."""
