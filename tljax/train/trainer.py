"""One trainer for single runs and sweeps.

A :class:`Trainer` compiles one step function once
(:func:`tljax.train.parallel.compile_step`, on one device, a mesh or under
``pmap``) and runs it two ways:

- :meth:`Trainer.fit`: a full run. It resumes from the workdir's latest
  checkpoint if there is one, runs to ``num_steps`` with a progress line
  (steps/s, loss, eta), evaluates every ``eval_every`` steps, appends metrics
  to ``<workdir>/metrics.jsonl``, checkpoints every ``checkpoint_every``
  steps and at the end, and stops with a clear error at the first step whose
  loss or metrics are NaN or Inf.
- :meth:`Trainer.run` / :meth:`Trainer.train_from`: a lean run for sweeps
  (label budgets x strategies x seeds), with no files and no printing: the
  batches of the whole run are drawn as :func:`tljax.data.batches` would
  draw them (:func:`stack_batches`; for arrays, gathered on the devices
  from one copy of the examples, except under ``pmap`` and on several
  processes, where they are stacked on the host and placed once), and run by
  one compiled program per step (or one ``lax.scan``, ``scan=True``). Every
  run whose batches have the same shapes reuses the compiled program
  (:attr:`Trainer.num_compiles`).

    trainer = Trainer(step, tx)                  # step(state, batch, rng)
    state, metrics = trainer.train_from(params, arrays, batch_size=64,
                                        num_steps=500, seed=0,
                                        rng=jax.random.key(0))

Only process 0 writes files and prints (multi-host runs call the same code
on every process; orbax writes checkpoints from all of them).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
import optax

from tljax import workdir as workdir_lib
from tljax.data import batching
from tljax.train import parallel as parallel_lib
from tljax.train import preemption
from tljax.train.state import create_train_state

PyTree = Any


class TrainingDiverged(FloatingPointError):
  """The loss or a metric became NaN or Inf."""


def check_finite(step_metrics: list[tuple[int, dict]]):
  """Raises :class:`TrainingDiverged` naming the first non-finite step."""
  for step, m in step_metrics:
    bad = {k: float(v) for k, v in m.items()
           if np.ndim(v) == 0 and not np.isfinite(v)}
    if bad:
      grads = (f" (l2_grads={float(m['l2_grads']):.3g})" if "l2_grads" in m
               else "")
      raise TrainingDiverged(
          f"training diverged at step {step}: {bad}{grads}. Lower the "
          "learning rate, clip gradients (config.optim.grad_clip_norm), or "
          "check the inputs for NaN/Inf.")


def stack_batches(arrays: dict[str, np.ndarray], batch_size: int,
                  num_steps: int, *, seed: int, start_step: int = 0,
                  process_index: int | None = None,
                  process_count: int | None = None
                  ) -> dict[str, np.ndarray]:
  """This process's part of the batches of ``num_steps`` steps, stacked on
  a leading axis.

  Step ``s`` gets exactly the batch :func:`tljax.data.batches` would give
  (the same seeded epoch permutations, the same contiguous slice of the
  global batch of ``batch_size`` for each process), so a lean run and a
  full run see the same data.
  """
  if not arrays:
    raise ValueError("stack_batches needs at least one array")
  idx = batching.stacked_batch_indices(
      batching.num_examples(arrays), batch_size, num_steps, seed=seed,
      start_step=start_step, process_index=process_index,
      process_count=process_count)
  return {k: np.asarray(v)[idx] for k, v in arrays.items()}


def _fmt(metrics: dict) -> str:
  return "  ".join(f"{k} {float(v):.4g}" for k, v in metrics.items()
                   if not k.startswith("l2_") and np.ndim(v) == 0)


class Trainer:
  """A step compiled once, run as a full :meth:`fit` or a lean :meth:`run`.

  Args:
    step: ``step(state, batch, rng, *, axis_name=None) -> (state, metrics)``.
    tx: the step's optimizer (for :meth:`init_state` / :meth:`train_from`).
    parallel: ``auto``, ``single``, ``mesh`` or ``pmap``.
    devices: the devices to use (default all).
    scan: lean runs as one ``lax.scan`` over all their steps.
    steps_per_call: full runs (:meth:`fit`) run this many steps per
      compiled call (one ``lax.scan``, its batches stacked on the host and
      placed at once), which saves the per-call overhead of small models
      (``benchmarks/speed.py``); progress lines, evals, checkpoints,
      preemption and the NaN check still happen at the same steps, and the
      NaN check names the exact step. XLA:CPU runs convolutions inside a
      loop body slower than at top level, so keep 1 for CNNs there.
  """

  def __init__(self, step: Callable, tx: optax.GradientTransformation | None
               = None, *, parallel: str = "auto", devices=None,
               scan: bool = False, steps_per_call: int = 1):
    if steps_per_call < 1:
      raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    self.tx = tx
    self.scan = scan
    self.steps_per_call = int(steps_per_call)
    self.compiled = parallel_lib.compile_step(step, parallel, devices=devices)

  @property
  def mode(self) -> str:
    return self.compiled.mode

  @property
  def num_compiles(self) -> int:
    """How many programs were compiled (traced) so far."""
    return self.compiled.num_compiles

  def init_state(self, params: PyTree, *, extra: PyTree | None = None,
                 model_state: PyTree | None = None, start_step: int = 0):
    """A fresh train state on ``params`` (and the model's ``model_state``,
    e.g. BatchNorm statistics) with the trainer's optimizer."""
    if self.tx is None:
      raise ValueError("this Trainer has no optimizer: build it with "
                       "Trainer(step, tx) to create train states.")
    state = create_train_state(params, self.tx, extra=extra,
                               model_state=model_state)
    return state.replace(step=state.step + start_step)

  # ------------------------------------------------------------- lean runs
  def run(self, state, arrays: dict[str, np.ndarray], *, batch_size: int,
          num_steps: int, seed: int, rng: jax.Array):
    """Trains on batches of ``arrays`` drawn as by :func:`stack_batches`
    from the state's step on; returns ``(state, last step's metrics)``."""
    if num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    c = self.compiled
    placed = None
    if arrays and all(isinstance(v, (np.ndarray, jax.Array))
                      for v in arrays.values()):
      # The examples go to the devices once and the run's batches are
      # gathered there (the same batches as stack_batches).
      idx = batching.stacked_batch_indices(
          batching.num_examples(arrays), batch_size, num_steps, seed=seed,
          start_step=int(state.step))
      placed = c.gather_batches(arrays, idx)
    if placed is None:
      placed = c.put_batches(stack_batches(
          arrays, batch_size, num_steps, seed=seed,
          start_step=int(state.step)))
    return self._run_placed(state, placed, num_steps, rng)

  def train_from(self, params: PyTree, arrays: dict[str, np.ndarray], *,
                 batch_size: int, num_steps: int, seed: int, rng: jax.Array,
                 extra: PyTree | None = None,
                 model_state: PyTree | None = None, start_step: int = 0):
    """:meth:`run` from a fresh state on ``params``; ``(state, metrics)``."""
    state = self.init_state(params, extra=extra, model_state=model_state,
                            start_step=start_step)
    return self.run(state, arrays, batch_size=batch_size,
                    num_steps=num_steps, seed=seed, rng=rng)

  def run_stacked(self, state, batches: dict[str, np.ndarray],
                  rng: jax.Array):
    """Trains on pre-stacked batches (leading axis: steps).

    Returns ``(state, metrics)``: the state on the devices (un-replicated
    under ``pmap``) and the last step's metrics as Python floats. A NaN or
    Inf metric in any step raises :class:`TrainingDiverged` naming it.
    """
    return self._run_placed(state, self.compiled.put_batches(batches),
                            len(next(iter(batches.values()))), rng)

  def _run_placed(self, state, placed, num_steps: int, rng: jax.Array):
    c = self.compiled
    start = int(state.step)
    state, metrics = c.run(c.put_state(state), placed, rng, scan=self.scan)
    metrics = c.metrics(metrics)
    finite = np.ones(num_steps, bool)  # one vectorised check of all steps
    for v in metrics.values():
      finite &= np.isfinite(np.reshape(v, (num_steps, -1))).all(1)
    if not finite.all():
      i = int(np.argmin(finite))  # the first step with a NaN or Inf
      check_finite([(start + i + 1, {k: v[i] for k, v in metrics.items()})])
    return c.device_state(state), {k: float(v[-1])
                                   for k, v in metrics.items()}

  # -------------------------------------------------------------- full run
  def fit(self, state, batches_from: Callable[[int], Iterator], *,
          num_steps: int, rng: jax.Array, workdir: str | None = None,
          eval_fn: Callable[[PyTree], dict] | None = None,
          eval_every: int = 0, log_every: int = 100,
          checkpoint_every: int = 0, name: str = "train"
          ) -> tuple[Any, dict]:
    """Trains ``state`` to ``num_steps``; see the module docstring.

    Args:
      state: the initial :class:`~tljax.train.state.TrainState`.
      batches_from: ``batches_from(start_step)`` returns an iterator of this
        process's batches from that step on (see :func:`tljax.data.batches`).
      num_steps: total steps (including any already done before a resume).
      rng: the run's key; the step folds in the step number.
      workdir: where metrics, checkpoints and (if resuming) state live; None
        for an in-memory run.
      eval_fn: ``eval_fn(state) -> dict`` of metrics of the train state
        (its ``params`` and ``model_state``), run every ``eval_every``
        steps and at the end.
      log_every: steps between progress lines and NaN checks.
      checkpoint_every: steps between checkpoints (0: only at the end);
        needs ``workdir``.
      name: a prefix for progress lines; runs other than ``train`` keep
        their checkpoints in ``<workdir>/<name>`` and their metrics in
        ``metrics_<name>.jsonl``.

    Returns:
      ``(state, metrics)``: the final host-side state and the last train and
      eval metrics (eval ones prefixed ``eval_``).

    SIGTERM or Ctrl-C (:mod:`tljax.train.preemption`) end the run after
    the current step with a checkpoint at that step and
    :class:`~tljax.train.preemption.Preempted`; the workdir is held
    (:func:`tljax.workdir.hold`) for the whole run.

    Raises:
      TrainingDiverged: at the first step with a NaN or Inf metric.
      Preempted: on SIGTERM or SIGINT.
      ValueError: if another process holds the workdir.
    """
    with workdir_lib.hold(workdir), preemption.watch() as stop:
      return self._fit(state, batches_from, num_steps, rng, workdir, eval_fn,
                       eval_every, max(log_every, 1), checkpoint_every, name,
                       stop)

  def _fit(self, state, batches_from, num_steps, rng, workdir, eval_fn,
           eval_every, every, checkpoint_every, name, stop):
    if num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    c = self.compiled
    ckpt = None
    start = 0
    jsonl = None
    if workdir:
      # Imported here: orbax is only needed by runs that keep a workdir.
      from tljax.train import checkpoint  # pylint: disable=g-import-not-at-top
      ckpt = checkpoint.Checkpointer(
          workdir if name == "train" else os.path.join(workdir, name))
      jsonl = os.path.join(workdir, "metrics.jsonl" if name == "train"
                           else f"metrics_{name}.jsonl")
      latest = ckpt.latest_step()
      if latest is not None:
        state = ckpt.restore(state, latest)
        start = int(latest)
        # Records past the checkpoint were made by a run that did not get to
        # save them; this run makes them again.
        workdir_lib.trim_jsonl(jsonl, start)
        if start >= num_steps:
          workdir_lib.say(
              f"[{name}] {ckpt.directory} already holds a finished run (step "
              f"{start} >= num_steps {num_steps}): nothing to train. Use a "
              "new workdir (or delete this one) to train again.")
        else:
          workdir_lib.say(f"[{name}] resumed from checkpoint at step {start}"
                          f" in {ckpt.directory}")

    def record(step, split, metrics):
      if jsonl:
        workdir_lib.append_jsonl(jsonl, {"step": int(step), "split": split,
                                         **metrics})

    def saved_note():
      latest = ckpt.latest_step() if ckpt is not None else None
      return (f" The last checkpoint, at step {latest}, is in "
              f"{ckpt.directory}." if latest is not None
              else " No checkpoint had been saved.")

    state = c.put_state(state)
    it = batches_from(start)
    pending: list[tuple[int, Any]] = []
    last: dict = {}
    t0 = time.perf_counter()

    def flush(done):
      host = {}   # one device-to-host copy per call, k steps at a time
      fetched = []
      for s, m, i in pending:
        h = host.setdefault(id(m), c.metrics(m))
        fetched.append((s, h if i is None else {key: v[i]
                                                for key, v in h.items()}))
      pending.clear()
      try:
        check_finite(fetched)
      except TrainingDiverged as e:
        raise TrainingDiverged(str(e) + saved_note()) from None
      for s, m in fetched:
        if s % every == 0 or s == num_steps:
          record(s, "train", m)
      return dict(fetched[-1][1]) if fetched else {}

    k = self.steps_per_call
    done = start
    while done < num_steps:
      if k == 1:
        state, metrics = c(state, c.put_batch(next(it)), rng)
        pending.append((done + 1, metrics, None))
        done += 1
      else:
        # A call runs k steps, cut short at the next step where something
        # happens (a progress line, an eval, a checkpoint, the end), so that
        # everything below still happens at exactly the steps it would.
        n = min(k, num_steps - done, every - done % every)
        if eval_fn is not None and eval_every:
          n = min(n, eval_every - done % eval_every)
        if ckpt is not None and checkpoint_every:
          n = min(n, checkpoint_every - done % checkpoint_every)
        chunk = [next(it) for _ in range(n)]
        stacked = {key: np.stack([np.asarray(b[key]) for b in chunk])
                   for key in chunk[0]}
        state, metrics = c.run(state, c.put_batches(stacked), rng, scan=True)
        pending.extend((done + i + 1, metrics, i) for i in range(n))
        done += n
      is_last = done == num_steps
      if done % every == 0 or is_last:
        last = flush(done)
        rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
        eta = (num_steps - done) / max(rate, 1e-9)
        workdir_lib.say(f"[{name}] step {done}/{num_steps}  {_fmt(last)}  "
                        f"{rate:.1f} steps/s  eta {eta:.0f}s")
      if eval_fn is not None and ((eval_every and done % eval_every == 0)
                                  or is_last):
        ev = {f"eval_{k}": v
              for k, v in eval_fn(c.device_state(state)).items()}
        check_finite([(done, ev)])
        record(done, "eval", ev)
        last.update(ev)
        workdir_lib.say(f"[{name}] eval at step {done}: {_fmt(ev)}")
      if ckpt is not None and (is_last or stop.requested or (
          checkpoint_every and done % checkpoint_every == 0)):
        ckpt.save(done, c.get_state(state))
      if stop.requested and not is_last:
        flush(done)
        if ckpt is not None:
          ckpt.close()
        stop.raise_if_requested(done, ckpt.directory if ckpt else None)
    host_state = c.get_state(state)
    if ckpt is not None:
      ckpt.close()
    if start >= num_steps:
      # A finished run: its last train metrics are on record, eval anew.
      rows = [r for r in workdir_lib.read_jsonl(jsonl) if r.get("split")
              == "train"] if jsonl else []
      last = {k: v for k, v in (rows[-1] if rows else {}).items()
              if k not in ("step", "split") and v is not None}
      if eval_fn is not None:
        last.update({f"eval_{k}": v for k, v in eval_fn(host_state).items()})
    return host_state, {k: float(v) for k, v in last.items()
                        if np.ndim(v) == 0}
