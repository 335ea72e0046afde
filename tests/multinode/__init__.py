"""Multi-node tests on one machine: Ray worker nodes that share no run storage (see cluster.py).

A package (not a rootdir test dir) so that other test modules can import its helpers as
``multinode.cluster`` / ``multinode.reference`` without a sys.path hack: ``tests/`` is on
sys.path because of the rootdir ``tests/conftest.py``.
"""
