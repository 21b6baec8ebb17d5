"""Process-wide state a test may change in-process and must not leak."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _keep_umask():
    """`lumen-agent run` sets umask 077 (its files are its own); a test that
    invokes it in-process must not pass that on to the tests after it."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory):
    """A test CA and a localhost certificate, made once for the whole run."""
    from support import certs as certs_mod

    return certs_mod.ensure_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(certs, tmp_path_factory: pytest.TempPathFactory):
    """The fake provider over TLS (HTTP/1.1), one per module; a module that
    needs another kind (HTTP/2, plain HTTP) defines its own ``server``."""
    from support import fake_provider as fp

    proc = fp.spawn(certs, workdir=tmp_path_factory.mktemp("fake-provider"))
    yield proc
    assert proc.stop() == 0, "the fake provider did not exit cleanly"
