"""Seeded, resumable batch iterators and evaluation batches.

The batch at step ``s`` is a pure function of ``(seed, s)``: examples are
visited in a fresh permutation every epoch, so a run resumed at step ``s``
sees exactly the batches an uninterrupted run would. With several processes
(multi-host), each takes its contiguous slice of the global batch.
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import numpy as np


def _epoch_perm(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng((seed, epoch)).permutation(n)


def _check_batching(n: int, batch_size: int, process_count: int = 1):
  if n <= 0:
    raise ValueError("cannot draw batches from an empty data set")
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got "
                     f"{batch_size!r}")
  if batch_size % process_count:
    raise ValueError(f"batch size {batch_size} is not divisible by the "
                     f"{process_count} processes")


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """Indices of the global batch at ``step`` (wrapping across epochs)."""
  _check_batching(n, batch_size)
  start = step * batch_size
  out, pos = [], start
  while pos < start + batch_size:
    epoch, offset = divmod(pos, n)
    take = min(n - offset, start + batch_size - pos)
    out.append(_epoch_perm(n, seed, epoch)[offset:offset + take])
    pos += take
  return np.concatenate(out)


def num_examples(arrays: dict[str, np.ndarray]) -> int:
  """The common length of ``arrays``; raises if they differ."""
  lengths = {k: len(v) for k, v in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"arrays must have the same length, got {lengths}")
  return next(iter(lengths.values()))


def local_batch_indices(n: int, batch_size: int, step: int, seed: int, *,
                        process_index: int | None = None,
                        process_count: int | None = None) -> np.ndarray:
  """This process's contiguous slice of the global batch at ``step``.

  ``process_index`` and ``process_count`` default to ``jax.process_index()``
  and ``jax.process_count()``.
  """
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  _check_batching(n, batch_size, pc)
  per = batch_size // pc
  return batch_indices(n, batch_size, step, seed)[pi * per:(pi + 1) * per]


def stacked_batch_indices(n: int, batch_size: int, num_steps: int, *,
                          seed: int, start_step: int = 0,
                          process_index: int | None = None,
                          process_count: int | None = None) -> np.ndarray:
  """``np.stack`` of :func:`local_batch_indices` for ``num_steps`` steps
  from ``start_step``: ``(num_steps, batch_size // process_count)``, each
  epoch's permutation drawn once (not once per step), and the last few
  results kept (a sweep's strategies share one labelled subset's batches).
  The array is read-only."""
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  _check_batching(n, batch_size, pc)
  return _stacked_indices(int(n), int(batch_size), int(num_steps), int(seed),
                          int(start_step), int(pi), int(pc))


@functools.lru_cache(maxsize=32)
def _stacked_indices(n, batch_size, num_steps, seed, start_step, pi, pc):
  first = start_step * batch_size
  last = (start_step + num_steps) * batch_size  # one past the end
  e0, e1 = first // n, (last - 1) // n
  perms = np.concatenate([_epoch_perm(n, seed, e) for e in range(e0, e1 + 1)])
  idx = perms[first - e0 * n:last - e0 * n].reshape(num_steps, batch_size)
  per = batch_size // pc
  idx = np.ascontiguousarray(idx[:, pi * per:(pi + 1) * per])
  idx.flags.writeable = False
  return idx


def batches(arrays: dict[str, np.ndarray], batch_size: int, *, seed: int = 0,
            start_step: int = 0, process_index: int | None = None,
            process_count: int | None = None) -> Iterator[dict]:
  """Infinite iterator of this process's part of each global batch.

  Args:
    arrays: same-length arrays, e.g. ``{'x': x, 'y': y}``; an image array
      (:class:`tljax.data.images.ImageArray`) is decoded with training
      augmentation drawn from ``(seed, step)``.
    batch_size: the global batch size (over all processes).
    seed: shuffling seed.
    start_step: the step of the first batch (for resuming).
    process_index, process_count: see :func:`local_batch_indices`.
  """
  n = num_examples(arrays)
  local_batch_indices(n, batch_size, start_step, seed,
                      process_index=process_index,
                      process_count=process_count)  # checks, before yielding
  from tljax.data import images  # pylint: disable=g-import-not-at-top
  if images.is_lazy(arrays):
    # Images decoded and augmented per batch, by grain's reader threads.
    yield from images.batches(
        arrays, batch_size, seed=seed, start_step=start_step,
        process_index=(jax.process_index() if process_index is None
                       else process_index),
        process_count=(jax.process_count() if process_count is None
                       else process_count))
    return
  step, chunk = start_step, 64  # indices of 64 steps at a time: an epoch's
  while True:                    # permutation is drawn once, not per step
    for idx in stacked_batch_indices(n, batch_size, chunk, seed=seed,
                                     start_step=step,
                                     process_index=process_index,
                                     process_count=process_count):
      yield {k: v[idx] for k, v in arrays.items()}
    step += chunk


def eval_batches(arrays: dict[str, np.ndarray], batch_size: int
                 ) -> Iterator[tuple[dict, int]]:
  """Fixed-size batches over all examples, the last one padded.

  Yields ``(batch, num_valid)``: padding repeats the last example so shapes
  (and compiled functions) stay fixed; drop rows past ``num_valid``.
  """
  n = len(next(iter(arrays.values())))
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    idx = np.arange(start, start + batch_size).clip(max=n - 1)
    yield {k: v[idx] for k, v in arrays.items()}, stop - start
