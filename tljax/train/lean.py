"""Many short training runs of one step function, compiled once.

For sweeps (label budgets x strategies x seeds, few-shot baselines) where the
full :func:`tljax.train.loop.fit` (checkpoints, progress, eval) would cost
more than the training: :class:`LeanTrainer` jits a step once and reuses it
for every run whose batches have the same shapes; :func:`stack_batches`
draws exactly the batches :func:`tljax.data.batches` would.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np

from tljax import data as data_lib
from tljax import models
from tljax.train import loop
from tljax.train.state import create_train_state

PyTree = Any


def compiled_init(model: nn.Module, example_shape: Sequence[int]
                  ) -> Callable[[jax.Array], PyTree]:
  """``key -> params`` for ``model``, compiled once.

  Eager ``model.init`` dispatches, and on first use compiles, every random
  and array operation (measured: 8 to 10 s per call for a small MLP on the
  2-core test machine under load); the compiled initialiser costs one
  compilation (about 5 s there) and then about 1 ms per call, so many runs
  with fresh initialisations use it.
  """
  return functools.partial(models.init_params, model, example_shape)


def stack_batches(arrays: dict[str, np.ndarray], batch_size: int,
                  num_steps: int, *, seed: int, start_step: int = 0
                  ) -> dict[str, np.ndarray]:
  """The batches of ``num_steps`` steps stacked on a leading axis.

  Step ``s`` gets exactly the batch :func:`tljax.data.batches` would give
  (the same seeded epoch permutations), so a scanned run and a looped run
  see the same data.
  """
  if not arrays:
    raise ValueError("stack_batches needs at least one array")
  n = {len(v) for v in arrays.values()}
  if len(n) != 1:
    raise ValueError(f"arrays must have the same length, got "
                     f"{ {k: len(v) for k, v in arrays.items()} }")
  n = n.pop()
  idx = np.stack([data_lib.batch_indices(n, batch_size, start_step + s, seed)
                  for s in range(num_steps)])
  return {k: np.asarray(v)[idx] for k, v in arrays.items()}


class LeanTrainer:
  """Runs many steps of one step function with one compilation.

  Built once per step function; every call with batches of the same shapes
  reuses the compiled program, so label budgets, seeds and initialisations
  change nothing but the inputs (tested with :attr:`num_compiles`). The
  batches of a whole run are stacked on the device up front
  (:func:`stack_batches`), so a step costs one dispatch and no host copy.

    trainer = LeanTrainer(step)           # step(state, batch, rng)
    state, metrics = trainer(state, arrays, batch_size=64, num_steps=500,
                             seed=0, rng=jax.random.key(0))

  With ``scan=True`` the whole run is one ``lax.scan``: best for tiny dense
  models, where dispatch dominates. On CPU, XLA runs convolutions inside a
  loop several times slower than at top level (measured here: CNN1D on
  mnist1d, 10 vs 2.7 ms per step), hence the default of a Python loop over
  one compiled step.

  ``metrics`` are the last step's, as Python floats; a NaN or Inf in any
  step raises :class:`tljax.train.loop.TrainingDiverged` naming it.
  """

  def __init__(self, step: Callable, *, scan: bool = False, tx=None):
    self.num_compiles = 0
    self.scan = scan
    self.tx = tx  # the step's optimizer, for train_from()

    def count():
      self.num_compiles += 1  # Python side effect: runs only when tracing.

    def run(state, batches, rng):
      count()
      return jax.lax.scan(lambda s, b: step(s, b, rng), state, batches)

    def one(state, batches, i, rng):
      count()
      return step(state, jax.tree.map(lambda a: a[i], batches), rng)

    # No buffer donation: callers reuse the initial parameters (e.g. the
    # source model's) across runs.
    self._run = jax.jit(run)
    self._one = jax.jit(one)

  def __call__(self, state, arrays: dict[str, np.ndarray], *, batch_size: int,
               num_steps: int, seed: int, rng: jax.Array):
    """Trains on batches of ``arrays`` drawn as by :func:`stack_batches`."""
    if num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    batches = stack_batches(arrays, batch_size, num_steps, seed=seed,
                            start_step=int(state.step))
    return self.run_stacked(state, batches, rng)

  def train_from(self, params: PyTree, arrays: dict[str, np.ndarray], *,
                 batch_size: int, num_steps: int, seed: int, rng: jax.Array,
                 extra: PyTree | None = None, start_step: int = 0):
    """A fresh train state on ``params`` (optimizer ``tx`` given at
    construction), trained as by :meth:`__call__`; returns
    ``(state, metrics)``."""
    if self.tx is None:
      raise ValueError("train_from needs the optimizer: build the trainer "
                       "with LeanTrainer(step, tx=tx)")
    state = create_train_state(params, self.tx, extra=extra)
    state = state.replace(step=state.step + start_step)
    return self(state, arrays, batch_size=batch_size, num_steps=num_steps,
                seed=seed, rng=rng)

  def run_stacked(self, state, batches: dict[str, np.ndarray], rng: jax.Array):
    """Trains on pre-stacked batches (leading axis: steps)."""
    num_steps = len(next(iter(batches.values())))
    start = int(state.step)
    if self.scan:
      state, metrics = self._run(state, batches, rng)
    else:
      batches = jax.device_put(batches)
      history = []
      for i in range(num_steps):
        state, m = self._one(state, batches, np.int32(i), rng)
        history.append(m)
      metrics = jax.tree.map(lambda *xs: np.stack(xs),
                             *jax.device_get(history))
    metrics = jax.device_get(metrics)
    bad = [i for i in range(num_steps)
           if not all(np.isfinite(v[i]) for v in metrics.values())]
    if bad:
      i = bad[0]
      loop.check_finite([(start + i + 1, {k: v[i] for k, v in
                                           metrics.items()})])
    return state, {k: float(v[-1]) for k, v in metrics.items()}


def check_sweep(strategies, allowed, budgets) -> tuple[list[str], list[int]]:
  """Validates a sweep's strategy names and label budgets (labels/class).

  Returns them as lists; raises one ValueError naming what is wrong.
  """
  strategies = list(strategies)
  bad = [s for s in strategies if s not in allowed]
  if bad or not strategies:
    raise ValueError(f"strategies must be a non-empty list from "
                     f"{tuple(allowed)}; got {strategies}")
  budgets = [int(b) for b in budgets]
  if not budgets or min(budgets) < 1:
    raise ValueError(f"budgets (labels per class) must be a non-empty list "
                     f"of positive integers, got {budgets}")
  return strategies, budgets


def summarize(values) -> dict[str, Any]:
  """``{"mean", "std", "runs"}`` of one cell of a sweep (over seeds)."""
  return {"mean": float(np.mean(values)), "std": float(np.std(values)),
          "runs": [float(v) for v in values]}
