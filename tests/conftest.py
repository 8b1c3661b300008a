"""Shared test fixtures and device parametrisation."""

from __future__ import annotations

import pytest
import torch


def devices() -> list:
    """CPU always; CUDA as a parameter that skips when no GPU is present."""
    return [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
            ],
        ),
    ]


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator, fresh for each test."""
    return torch.Generator().manual_seed(1234)
