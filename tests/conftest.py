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
