"""The host tools: inventory, doctor, bind and restore with their journal, grants, snapshots."""
