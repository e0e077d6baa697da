"""Test session set-up: 8 fake CPU devices for the sharding tests.

XLA_FLAGS must be set before JAX initialises its backend, so this runs at import
time of the first conftest, before any test module imports jax.
"""
import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
