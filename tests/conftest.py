"""Test setup shared by every test file.

Four CPU devices are configured once, before any JAX computation runs, so
that mesh, pmap and multi-device tests run on this 2-core machine.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
