"""Checkpoints with orbax: the train state for resuming, parameters for
transfer.

- :class:`Checkpointer` saves the whole train state every N steps under
  ``<workdir>/checkpoints/<step>`` and restores the latest one, so a run that
  is started again in the same workdir resumes where it stopped.
- :func:`save_params` / :func:`load_params` write and read a parameter tree
  alone (``<workdir>/params``): what a source run hands a target run, which
  then calls :func:`tljax.params.merge_params` with ``dont_load``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


def _abs(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path))


class Checkpointer:
  """Saves and restores train states in ``<workdir>/checkpoints``."""

  def __init__(self, workdir: str, *, max_to_keep: int = 2):
    self.directory = os.path.join(_abs(workdir), "checkpoints")
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: PyTree, *, force: bool = True):
    self._manager.save(int(step), args=ocp.args.StandardSave(state),
                       force=force)
    self._manager.wait_until_finished()

  def restore(self, template: PyTree, step: int | None = None) -> PyTree:
    """Restores ``step`` (default latest) into the structure of ``template``."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(
        lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), template)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError, TypeError) as e:
      # orbax lists every mismatched leaf over many lines; one is enough.
      first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
      raise ValueError(
          f"the checkpoint at step {step} in {self.directory} does not fit "
          f"this run's model or optimizer ({type(e).__name__}: {first}); it "
          "was made by another run. Use a new workdir (or delete this one).") \
          from None
    return jax.tree.map(np.asarray, restored)

  def close(self):
    self._manager.close()


def save_params(path: str, params: PyTree,
                model_state: PyTree | None = None):
  """Writes a model's parameters to ``path`` (a directory; replaced if
  present), with its ``model_state`` (BatchNorm statistics) if it has one:
  the tree is then ``{'params': params, 'batch_stats': ...}``."""
  path = _abs(path)
  tree = {"params": params, **model_state} if model_state else params
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, jax.device_get(tree), force=True)


def load_variables(path: str) -> tuple[PyTree, dict]:
  """``(params, model_state)`` written by :func:`save_params`.

  ``path`` may be the params directory or a workdir that contains one.
  (Pretrained weights files are read by :mod:`tljax.models.convert`; the
  drivers' ``init_from`` takes either, ``tljax.drivers.common.
  read_variables``.)
  """
  path = _abs(path)
  if os.path.isdir(os.path.join(path, "params")):
    path = os.path.join(path, "params")
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"no parameters at {path!r}: point init_from at the workdir of a "
        "finished source run (it holds params/), at a params directory, or "
        "at a pretrained .safetensors / .npz weights file.")
  with ocp.StandardCheckpointer() as ckptr:
    tree = jax.tree.map(np.asarray, ckptr.restore(path))
  if isinstance(tree, dict) and "params" in tree and set(tree) <= {
      "params", "batch_stats", "cache"}:
    return tree["params"], {k: v for k, v in tree.items() if k != "params"}
  return tree, {}


def load_params(path: str) -> PyTree:
  """The parameters of :func:`load_variables` (its model state dropped)."""
  return load_variables(path)[0]
