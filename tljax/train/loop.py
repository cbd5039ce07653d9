"""The training loop shared by every experiment.

:func:`fit` compiles a step (:mod:`tljax.train.parallel`), resumes from the
workdir's latest checkpoint if there is one, runs to ``num_steps`` with a
progress line (steps/s, loss, eta), evaluates every ``eval_every`` steps,
appends metrics to ``<workdir>/metrics.jsonl``, checkpoints every
``checkpoint_every`` steps and at the end, and stops with a clear error at the
first step whose loss or metrics are NaN or Inf.

Only process 0 writes files and prints (multi-host runs call it on every
process).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np

from tljax.train import checkpoint as ckpt_lib
from tljax.train import parallel

PyTree = Any


class TrainingDiverged(FloatingPointError):
  """The loss or a metric became NaN or Inf."""


def is_chief() -> bool:
  return jax.process_index() == 0


def _to_py(x):
  if isinstance(x, dict):
    return {k: _to_py(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_to_py(v) for v in x]
  if isinstance(x, (np.generic, np.ndarray, jax.Array)):
    x = np.asarray(x)
    return x.item() if x.ndim == 0 else x.tolist()
  return x


class MetricWriter:
  """Appends JSON lines ``{"step": s, "split": ..., **metrics}``."""

  def __init__(self, workdir: str | None, filename: str = "metrics.jsonl"):
    self.path = (os.path.join(workdir, filename)
                 if workdir and is_chief() else None)
    if self.path:
      os.makedirs(workdir, exist_ok=True)

  def write(self, step: int, split: str, metrics: dict):
    if self.path:
      with open(self.path, "a") as f:
        f.write(json.dumps({"step": int(step), "split": split,
                            **_to_py(metrics)}) + "\n")


def write_results(workdir: str, metrics: dict, config=None, **extra) -> str:
  """Writes ``<workdir>/results.json``: ``{"metrics": ..., "config": ...}``."""
  path = os.path.join(workdir, "results.json")
  if not is_chief():
    return path
  os.makedirs(workdir, exist_ok=True)
  cfg = config.to_dict() if hasattr(config, "to_dict") else config
  out = {"metrics": _to_py(metrics), "config": _to_py(cfg), **_to_py(extra)}
  with open(path, "w") as f:
    json.dump(out, f, indent=2, sort_keys=True, default=str)
  return path


def say(msg: str):
  """Prints a progress line from process 0."""
  if is_chief():
    print(msg, file=sys.stdout, flush=True)


def _fmt(metrics: dict, keys=None) -> str:
  keys = keys or [k for k in metrics if not k.startswith("l2_")]
  return "  ".join(f"{k} {float(metrics[k]):.4g}" for k in keys if k in metrics)


def check_finite(step_metrics: list[tuple[int, dict]]):
  """Raises :class:`TrainingDiverged` naming the first non-finite step."""
  for step, m in step_metrics:
    bad = {k: float(v) for k, v in m.items()
           if np.ndim(v) == 0 and not np.isfinite(v)}
    if bad:
      raise TrainingDiverged(
          f"training diverged at step {step}: {bad} (l2_grads="
          f"{float(m.get('l2_grads', float('nan'))):.3g}). Lower the learning "
          "rate, clip gradients (config.optim.grad_clip_norm), or check the "
          "inputs for NaN/Inf; the last good checkpoint is kept in the "
          "workdir.")


def fit(state, step_fn: Callable, batches_from: Callable[[int], Iterator],
        *, num_steps: int, rng: jax.Array, workdir: str | None = None,
        eval_fn: Callable[[PyTree], dict] | None = None, eval_every: int = 0,
        log_every: int = 100, checkpoint_every: int = 0,
        parallel_mode: str = "auto", name: str = "train",
        resume: bool = True) -> tuple[Any, dict]:
  """Trains ``state`` with ``step_fn`` to ``num_steps``; see module doc.

  Args:
    state: the initial :class:`~tljax.train.state.TrainState` (host).
    step_fn: ``step(state, batch, rng, *, axis_name=None)``.
    batches_from: ``batches_from(start_step)`` returns an iterator of this
      process's batches from that step on (see :func:`tljax.data.batches`).
    num_steps: total steps (including any already done before a resume).
    rng: the run's key; the step folds in the step number.
    workdir: where metrics, checkpoints and (if resuming) state live; None
      for an in-memory run.
    eval_fn: ``eval_fn(params) -> dict`` of metrics, run every
      ``eval_every`` steps and at the end.
    log_every: steps between progress lines and NaN checks.
    checkpoint_every: steps between checkpoints (0: only at the end); needs
      ``workdir``.
    parallel_mode: ``auto``, ``single``, ``mesh`` or ``pmap``.
    name: a prefix for progress lines and the checkpoint folder.
    resume: restore the latest checkpoint in ``workdir`` if any.

  Returns:
    ``(state, metrics)``: the final host-side state and the last train and
    eval metrics (eval ones prefixed ``eval_``).

  Raises:
    TrainingDiverged: at the first step with a NaN or Inf metric.
  """
  compiled = parallel.compile_step(step_fn, parallel_mode)
  ckpt = None
  start = 0
  if workdir:
    sub = workdir if name == "train" else os.path.join(workdir, name)
    ckpt = ckpt_lib.Checkpointer(sub)
    latest = ckpt.latest_step() if resume else None
    if latest is not None:
      state = ckpt.restore(state, latest)
      start = int(latest)
      if start >= num_steps:
        say(f"[{name}] {ckpt.directory} already holds a finished run (step "
            f"{start} >= num_steps {num_steps}): nothing to train. Use a new "
            "workdir (or delete this one) to train again.")
      else:
        say(f"[{name}] resumed from checkpoint at step {start} in "
            f"{ckpt.directory}")
  writer = MetricWriter(workdir, f"metrics_{name}.jsonl" if name != "train"
                        else "metrics.jsonl")
  state = compiled.put_state(state)
  params_view = ((lambda s: jax.tree.map(lambda x: x[0], s.params))
                 if compiled.mode == "pmap" else (lambda s: s.params))
  it = batches_from(start)
  pending: list[tuple[int, Any]] = []
  last: dict = {}
  t0, s0 = time.perf_counter(), start
  for step in range(start, num_steps):
    batch = next(it)
    state, metrics = compiled(state, compiled.put_batch(batch), rng)
    pending.append((step + 1, metrics))
    done = step + 1
    is_last = done == num_steps
    if done % max(log_every, 1) == 0 or is_last:
      fetched = [(s, compiled.metrics(m)) for s, m in pending]
      pending.clear()
      check_finite(fetched)
      for s, m in fetched:
        if s % max(log_every, 1) == 0 or s == num_steps:
          writer.write(s, "train", m)
      last = dict(fetched[-1][1])
      rate = (done - s0) / max(time.perf_counter() - t0, 1e-9)
      eta = (num_steps - done) / max(rate, 1e-9)
      say(f"[{name}] step {done}/{num_steps}  {_fmt(last)}  "
          f"{rate:.1f} steps/s  eta {eta:.0f}s")
    if eval_fn is not None and ((eval_every and done % eval_every == 0)
                                or is_last):
      ev = {f"eval_{k}": v for k, v in eval_fn(params_view(state)).items()}
      check_finite([(done, ev)])
      writer.write(done, "eval", ev)
      last.update(ev)
      say(f"[{name}] eval at step {done}: {_fmt(ev)}")
    if ckpt is not None and ((checkpoint_every and done % checkpoint_every
                              == 0) or is_last):
      ckpt.save(done, compiled.get_state(state))
  host_state = compiled.get_state(state)
  if ckpt is not None:
    ckpt.close()
  if start >= num_steps and eval_fn is not None:
    last = {f"eval_{k}": v
            for k, v in eval_fn(host_state.params).items()}
  return host_state, {k: float(v) for k, v in last.items()
                      if np.ndim(v) == 0}


def fit_with_config(state, step_fn: Callable,
                    batches_from: Callable[[int], Iterator], config, *,
                    workdir: str | None,
                    eval_fn: Callable[[PyTree], dict] | None = None,
                    name: str = "train") -> tuple[Any, dict]:
  """:func:`fit` with its settings read from an experiment config.

  Reads ``num_steps``, ``seed`` (the rng), ``eval_every``, ``log_every``,
  ``checkpoint_every`` and ``parallel`` — the fields every experiment config
  has.
  """
  return fit(state, step_fn, batches_from, num_steps=config.num_steps,
             rng=jax.random.key(config.seed), workdir=workdir,
             eval_fn=eval_fn, eval_every=config.eval_every,
             log_every=config.log_every,
             checkpoint_every=config.checkpoint_every,
             parallel_mode=config.parallel, name=name)
