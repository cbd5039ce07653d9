"""Test setup shared by every test file.

Four CPU devices are configured once, before any JAX computation runs, so
that mesh, pmap and multi-device tests run on this 2-core machine.

Compiled programs go to JAX's persistent compilation cache, shared by the
xdist workers and by the experiment binaries the tests start as
subprocesses (they inherit the environment): many tests compile the same
steps (the same quick configs, the same binary started again after a
kill), and compiling is most of a small test's time. Entries are keyed by
the program, the JAX version and the flags, so a stale entry is never used.
"""
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"tljax-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests draw random numbers with the ``rbg`` PRNG (XLA's RngBitGenerator)
# rather than the default threefry: compiling threefry's initialisers is most
# of a ResNet's init time on the CPU (ResNet-18 at width 8: 15.6 s against
# 4.8 s). tljax passes typed keys and never depends on the implementation;
# test_prng_implementation_is_the_users_choice checks both give a model.
os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
