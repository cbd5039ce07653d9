"""Compiling one step three ways: one device, a data-parallel mesh, pmap.

    compiled = compile_step(step, mode="auto")
    state = compiled.put_state(state)
    state, metrics = compiled(state, compiled.put_batch(batch), rng)

- ``single``: ``jax.jit`` on one device.
- ``mesh`` (the default when there are several devices): ``jax.jit`` with the
  batch sharded over a 1-D ``Mesh`` named ``data`` and the state replicated;
  XLA inserts the gradient all-reduce. Works across hosts, where each process
  feeds its slice of the global batch (:func:`put_batch` uses
  ``jax.make_array_from_process_local_data``).
- ``pmap``: the same step under ``jax.pmap`` with ``axis_name='batch'``;
  gradients are ``pmean``-ed inside the step. The state is replicated with a
  leading device axis; ``get_state`` undoes that.

All three give the same parameters for the same global batch (tested).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

PyTree = Any
AXIS = "batch"


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh named ``data`` over ``devices`` (default: all devices)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), ("data",))


@dataclasses.dataclass
class CompiledStep:
  """A compiled step plus the functions that place state and batches."""
  fn: Callable
  mode: str
  num_devices: int
  mesh: jax.sharding.Mesh | None = None

  def __call__(self, state, batch, rng):
    return self.fn(state, batch, rng)

  def put_state(self, state):
    if self.mode == "pmap":
      n = self.num_devices
      return jax.tree.map(
          lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), state)
    if self.mode == "mesh":
      return jax.device_put(state, NamedSharding(self.mesh, P()))
    return jax.device_put(state)

  def get_state(self, state):
    """The state as one host-side copy (un-replicated under pmap)."""
    if self.mode == "pmap":
      return jax.device_get(jax.tree.map(lambda x: x[0], state))
    return jax.device_get(state)

  def put_batch(self, batch: dict):
    """Places this process's part of the global batch on the devices."""
    check_divisible(batch, self.num_devices if self.mode != "mesh" else
                    self.mesh.size // jax.process_count())
    if self.mode == "pmap":
      n = self.num_devices
      return jax.tree.map(
          lambda x: np.asarray(x).reshape((n, -1) + np.shape(x)[1:]), batch)
    if self.mode == "mesh":
      sharding = NamedSharding(self.mesh, P("data"))
      return jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(
              sharding, np.asarray(x)), batch)
    return batch

  def metrics(self, metrics):
    """Metrics as host scalars (the first replica's under pmap)."""
    if self.mode == "pmap":
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return jax.device_get(metrics)


def check_divisible(batch: dict, n: int):
  for k, x in batch.items():
    if np.ndim(x) and np.shape(x)[0] % n:
      raise ValueError(
          f"batch[{k!r}] has {np.shape(x)[0]} examples on this process, not "
          f"divisible by its {n} devices; choose a batch size that is a "
          f"multiple of {n * jax.process_count()} (the global device count).")


def compile_step(step: Callable, mode: str = "auto", *, devices=None,
                 donate: bool = True) -> CompiledStep:
  """Compiles ``step(state, batch, rng, *, axis_name=None)``; see module doc.

  Args:
    step: a pure step function.
    mode: ``auto`` (``mesh`` on several devices, else ``single``), ``single``,
      ``mesh`` or ``pmap``.
    devices: devices to use (default all; ``pmap`` uses local ones).
    donate: donate the input state's buffers (the usual case in a loop).
  """
  if mode not in ("auto", "single", "mesh", "pmap"):
    raise ValueError(f"unknown parallel mode {mode!r}; choose auto, single, "
                     "mesh or pmap")
  devices = list(jax.devices() if devices is None else devices)
  if mode == "auto":
    mode = "mesh" if len(devices) > 1 else "single"
  donate_argnums = (0,) if donate else ()
  if mode == "single":
    return CompiledStep(jax.jit(step, donate_argnums=donate_argnums),
                        "single", 1)
  if mode == "pmap":
    local = [d for d in devices if d.process_index == jax.process_index()]
    fn = jax.pmap(functools.partial(step, axis_name=AXIS), axis_name=AXIS,
                  in_axes=(0, 0, None), donate_argnums=donate_argnums,
                  devices=local)
    return CompiledStep(fn, "pmap", len(local))
  mesh = data_mesh(devices)
  replicated = NamedSharding(mesh, P())
  fn = jax.jit(step, in_shardings=(replicated, NamedSharding(mesh, P("data")),
                                   replicated),
               out_shardings=(replicated, replicated),
               donate_argnums=donate_argnums)
  return CompiledStep(fn, "mesh", len(devices), mesh)
