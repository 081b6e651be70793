"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

#: The suite runs the kernels of the fixed rule (supernet/dispatch.py), so that no test
#: depends on a timing and the tests that look for a kernel find it (tests/test_dispatch.py
#: sets its own modes); subprocesses inherit it. A value set outside is kept.
os.environ.setdefault("ATTNAS_DISPATCH", "fixed")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small tensors: one torch thread is much faster than two when the cores are shared
    (a module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
