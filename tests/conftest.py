"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(scope="module")
def ray_session():
    """One real local Ray per test module (2 CPUs, no dashboard); a module that needs
    another shape of session defines its own ``ray_session``."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
