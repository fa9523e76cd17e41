"""The lab tier: tests that run as root in the lab guest, on the real kernel.

A package, so that its helpers (``labhelp``, ``loadwork``, the edu suite) are imported
relatively and its conftest is ``lab.conftest``, apart from ``tests/conftest.py``.
"""
