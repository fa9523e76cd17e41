"""pyvfio as the node agent of cluster engines: what a node can offer, in each engine's format.

`offer` chooses what a node offers (viable IOMMU groups, one device per group, on vfio-pci);
`nova` writes it as OpenStack Nova's ``[pci]`` options, `kubevirt` as the KubeVirt CR's
``permittedHostDevices`` (docs/fleet.md).
"""
