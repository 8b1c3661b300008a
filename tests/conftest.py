"""Shared test fixtures (helpers that tests import live in helpers.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator, fresh for each test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (restored afterwards).

    MKL's threaded FFT costs ~10 ms per call on tiny tensors when the 2 cores are busy (OpenMP
    barrier); the numerical gradient checks make thousands of calls, so they run on one thread.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
