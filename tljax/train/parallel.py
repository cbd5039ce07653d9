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

Besides one step at a time, a :class:`CompiledStep` runs many steps over
batches stacked on a leading steps axis and placed on the devices once
(:meth:`CompiledStep.put_batches`, :meth:`CompiledStep.run`): a Python loop
over one compiled "step ``i`` of the stack" program, or one ``lax.scan`` over
the whole stack. Every program is compiled once per shape and counted in
:attr:`CompiledStep.num_compiles`.

All three modes give the same parameters for the same global batch (tested).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

PyTree = Any
AXIS = "batch"
MODES = ("auto", "single", "mesh", "pmap")


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh named ``data`` over ``devices`` (default: all devices)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), ("data",))


@functools.lru_cache(maxsize=None)
def _copier(sharding):
  # The output buffers of a compiled identity are always fresh (device_put
  # may alias the source for a replicated sharding), so donating them never
  # frees the caller's arrays.
  return jax.jit(lambda tree: tree, out_shardings=sharding)


@functools.lru_cache(maxsize=None)
def _gatherer(sharding):
  # One program per array shapes: the batches of a run, gathered where the
  # examples already are (no host copy of every step's batch).
  return jax.jit(lambda arrays, idx: jax.tree.map(lambda a: a[idx], arrays),
                 out_shardings=sharding)


def _slice(batches, i):
  return jax.tree.map(lambda a: a[i], batches)


class CompiledStep:
  """A step compiled for one parallel mode, and how to feed it.

  Built by :func:`compile_step`. ``step(state, batch, rng, *,
  axis_name=None)`` is the pure step; the compiled programs donate the state
  they are given (``put_state`` always hands them a copy).
  """

  def __init__(self, step: Callable, mode: str, devices, donate: bool):
    self.mode = mode
    self.num_compiles = 0
    self._donate = (0,) if donate else ()
    if mode == "pmap":
      devices = [d for d in devices if d.process_index == jax.process_index()]
    self.devices = devices
    self.num_devices = len(devices) if mode != "single" else 1
    self.mesh = data_mesh(devices) if mode == "mesh" else None
    if mode == "pmap":
      # Arrays with a leading device axis, one slice per local device: what
      # pmap reads without moving data.
      self._per_device = NamedSharding(
          jax.sharding.Mesh(np.asarray(devices), ("devices",)),
          P("devices"))
    if mode == "pmap":
      step = functools.partial(step, axis_name=AXIS)
    self._step = step
    self._programs: dict[str, Callable] = {}

  # ------------------------------------------------------------ compiling
  def _counted(self, fn):
    def traced(*args):
      self.num_compiles += 1  # a Python side effect: runs only when tracing
      return fn(*args)
    return traced

  def _compile(self, fn, batch_spec, extra_in=()):
    """Compiles ``fn(state, batch, *extra, rng)`` for this mode."""
    fn = self._counted(fn)
    n_extra = len(extra_in)
    if self.mode == "pmap":
      return jax.pmap(fn, axis_name=AXIS,
                      in_axes=(0, 0) + (None,) * (n_extra + 1),
                      donate_argnums=self._donate, devices=self.devices)
    if self.mode == "single":
      return jax.jit(fn, donate_argnums=self._donate)
    repl = NamedSharding(self.mesh, P())
    return jax.jit(fn, in_shardings=(repl, NamedSharding(self.mesh, batch_spec))
                   + (repl,) * (n_extra + 1),
                   out_shardings=(repl, repl), donate_argnums=self._donate)

  def _program(self, name: str):
    if name not in self._programs:
      step = self._step
      if name == "step":
        prog = self._compile(step, P("data"))
      elif name == "step_at":
        prog = self._compile(lambda s, b, i, r: step(s, _slice(b, i), r),
                             P(None, "data"), extra_in=(None,))
      else:  # scan
        prog = self._compile(
            lambda s, b, r: jax.lax.scan(lambda c, x: step(c, x, r), s, b),
            P(None, "data"))
      self._programs[name] = prog
    return self._programs[name]

  # -------------------------------------------------------------- running
  def __call__(self, state, batch, rng):
    """One step on a batch placed by :meth:`put_batch`."""
    return self._program("step")(state, batch, rng)

  def run(self, state, batches, rng, *, scan: bool = False):
    """All steps of batches placed by :meth:`put_batches`.

    Returns ``(state, metrics)`` with each metric stacked over the steps
    (on the device). ``scan=True`` runs the whole stack as one ``lax.scan``
    (best for tiny dense models, where dispatch dominates; XLA on CPU runs
    convolutions inside a loop body more slowly than at top level, hence the
    default Python loop over one compiled step).
    """
    num_steps = int(np.shape(jax.tree.leaves(batches)[0])[
        1 if self.mode == "pmap" else 0])
    if scan:
      return self._program("scan")(state, batches, rng)
    prog, history = self._program("step_at"), []
    for i in range(num_steps):
      state, m = prog(state, batches, np.int32(i), rng)
      history.append(m)
    axis = 1 if self.mode == "pmap" else 0
    return state, jax.tree.map(lambda *xs: jax.numpy.stack(xs, axis),
                               *history)

  # -------------------------------------------------------------- placing
  def put_state(self, state):
    """A copy of ``state`` on the devices (replicated)."""
    if self.mode == "pmap":
      n = self.num_devices
      return jax.tree.map(lambda x: jax.device_put(
          np.broadcast_to(np.asarray(x), (n,) + np.shape(x)),
          self._per_device), state)
    if self.mode == "mesh":
      return _copier(NamedSharding(self.mesh, P()))(state)
    return _copier(None)(state)

  def get_state(self, state):
    """The state as one host-side copy (un-replicated under pmap)."""
    if self.mode == "pmap":
      return jax.device_get(jax.tree.map(lambda x: x[0], state))
    return jax.device_get(state)

  def device_state(self, state):
    """The state on the device, un-replicated under pmap (no host copy)."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: x[0], state)
    return state

  def _local_devices(self) -> int:
    if self.mode == "mesh":
      return self.mesh.size // jax.process_count()
    return self.num_devices

  def put_batch(self, batch: dict):
    """Places this process's part of the global batch on the devices."""
    check_divisible(batch, self._local_devices())
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

  def put_batches(self, batches: dict):
    """Places batches stacked on a leading steps axis (this process's part
    of each global batch), for :meth:`run`."""
    check_divisible({k: v[0] for k, v in batches.items()},
                    self._local_devices())
    if self.mode == "pmap":
      n = self.num_devices

      def split(x):
        x = np.asarray(x)
        x = x.reshape((x.shape[0], n, -1) + x.shape[2:])
        return jax.device_put(np.swapaxes(x, 0, 1), self._per_device)
      return jax.tree.map(split, batches)
    if self.mode == "mesh":
      sharding = NamedSharding(self.mesh, P(None, "data"))
      return jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(
              sharding, np.asarray(x)), batches)
    return jax.device_put(batches)

  def gather_batches(self, arrays: dict, idx: np.ndarray):
    """``{k: arrays[k][idx]}`` placed as :meth:`put_batches` places stacked
    batches, gathered on the devices from one copy of ``arrays`` (``idx``:
    steps x this process's batch, e.g.
    :func:`tljax.data.batching.stacked_batch_indices`). ``None`` under
    ``pmap`` or with several processes: stack on the host there."""
    if self.mode == "pmap" or jax.process_count() > 1:
      return None
    check_divisible({k: idx[0] for k in arrays}, self._local_devices())
    if self.mode == "mesh":
      arrays = jax.device_put(arrays, NamedSharding(self.mesh, P()))
      return _gatherer(NamedSharding(self.mesh, P(None, "data")))(arrays,
                                                                  idx)
    return _gatherer(None)(arrays, idx)

  def metrics(self, metrics):
    """Metrics as host values (the first replica's under pmap)."""
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
    donate: donate the input state's buffers (the usual case in a loop;
      :meth:`CompiledStep.put_state` gives the programs a copy to donate).

  Returns:
    A :class:`CompiledStep` (each program compiles on first use).
  """
  if mode not in MODES:
    raise ValueError(f"unknown parallel mode {mode!r}; choose auto, single, "
                     "mesh or pmap")
  devices = list(jax.devices() if devices is None else devices)
  if mode == "auto":
    mode = "mesh" if len(devices) > 1 else "single"
  return CompiledStep(step, mode, devices, donate)
