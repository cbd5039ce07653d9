"""Episodes for few-shot and meta-learning, and class-aware batches.

- :class:`EpisodeSampler`: N-way K-shot classification tasks (a support set of
  exactly ``n_way * k_shot`` examples and a query set) drawn from any labelled
  :class:`~tljax.data.sources.Dataset`, restricted to a set of classes.
  :func:`meta_split` builds the meta-train and meta-test samplers on disjoint
  class sets (Vinyals et al. 2016, "Matching Networks for One Shot
  Learning"; Snell et al. 2017), and refuses overlapping ones.
- :class:`SinusoidTasks`: the sinusoid regression family of MAML (Finn,
  Abbeel & Levine 2017): ``y = A sin(x - phase)`` with ``A ~ U[0.1, 5]``,
  ``phase ~ U[0, pi]``, ``x ~ U[-5, 5]``.
- :class:`ClassBalancedSampler` / :func:`class_balanced_batches` (P classes
  x M examples per global batch, for in-batch mining, Hermans et al. 2017)
  and :func:`pair_batches` (positive and negative pairs
  for Siamese networks).

Like :func:`tljax.data.batches`, every sampler is a pure function of
``(seed, index)``: episode ``i`` is the same on every run, so a resumed run
sees the episodes an uninterrupted one would, and ``batches(start_step)``
plugs into :meth:`tljax.train.Trainer.fit`.

  >>> from tljax import data
  >>> ds = data.load("digits")
  >>> train, test = meta_split(ds, ds, train_classes=range(5),
  ...                          test_classes=range(5, 10), n_way=5, k_shot=1,
  ...                          n_query=3)
  >>> ep = train.episode(0)
  >>> ep["support_x"].shape, ep["support_y"].tolist(), ep["query_x"].shape
  ((5, 8, 8, 1), [0, 1, 2, 3, 4], (15, 8, 8, 1))
"""

from __future__ import annotations

from typing import Iterator, Sequence

import jax
import numpy as np

from tljax.data.sources import Dataset

# Salts that keep the streams of different samplers with the same seed apart.
_EPISODE, _BALANCED, _PAIRS, _SINE = 11, 23, 37, 53

TASK_KEYS = ("support_x", "support_y", "query_x", "query_y")


def task_arrays(batch: dict) -> dict:
  """The support and query arrays of a meta-batch (or of one episode):
  what the meta-learners ``vmap`` over; other keys (``classes``,
  ``amplitude``, ...) are left out."""
  missing = [k for k in TASK_KEYS if k not in batch]
  if missing:
    raise ValueError(f"a meta-batch needs {TASK_KEYS}; it lacks {missing} "
                     f"(it has {sorted(batch)}).")
  return {k: batch[k] for k in TASK_KEYS}


def _rng(seed: int, salt: int, index: int) -> np.random.Generator:
  return np.random.default_rng((int(seed), salt, int(index)))


def _class_index(dataset: Dataset, classes: Sequence[int] | None,
                 min_per_class: int, what: str) -> dict[int, np.ndarray]:
  """``{class: indices of its examples}``; raises on unusable classes."""
  if not isinstance(dataset, Dataset):
    raise ValueError(f"{what} needs a tljax.data.Dataset (from "
                     f"tljax.data.load), got {type(dataset).__name__}")
  if dataset.y is None:
    raise ValueError(f"{what}: data set {dataset.name!r} has no labels; "
                     "episodes and class-aware batches need labelled data.")
  if not np.all(np.isfinite(dataset.x)):
    raise ValueError(f"{what}: data set {dataset.name!r} has NaN or Inf in x; "
                     "clean or impute the data first.")
  present = np.unique(dataset.y)
  classes = present if classes is None else np.asarray(list(classes), int)
  if classes.size == 0:
    raise ValueError(f"{what}: the class set is empty; give at least one "
                     "class.")
  if len(set(classes.tolist())) != classes.size:
    raise ValueError(f"{what}: classes contain duplicates: "
                     f"{classes.tolist()}")
  index = {int(c): np.flatnonzero(dataset.y == c) for c in classes}
  small = {c: len(i) for c, i in index.items() if len(i) < min_per_class}
  if small:
    raise ValueError(
        f"{what}: data set {dataset.name!r} has too few examples of classes "
        f"{small} (class: count); each needs at least {min_per_class}. "
        "Lower k_shot / n_query / examples per class, or drop those classes.")
  return index


class EpisodeSampler:
  """N-way K-shot episodes from the given classes of a labelled data set.

  Episode ``i`` picks ``n_way`` of the classes at random, in random order
  (episode label ``j`` is the ``j``-th picked class, so labels carry no
  meaning across episodes), then ``k_shot + n_query`` distinct examples of
  each: the support set has exactly ``n_way * k_shot`` examples, the query
  set ``n_way * n_query``; both are sorted by episode label.

  Args:
    dataset: a labelled :class:`~tljax.data.sources.Dataset`.
    classes: the (original) class ids episodes may use; default all.
    n_way, k_shot, n_query: classes per episode, support and query examples
      per class.
    seed: the sampler's seed.

  Raises:
    ValueError: if the data are unlabelled, ``n_way`` exceeds the number of
      classes, or a class has fewer than ``k_shot + n_query`` examples.
  """

  def __init__(self, dataset: Dataset, classes: Sequence[int] | None = None,
               *, n_way: int, k_shot: int, n_query: int, seed: int = 0):
    for name, v, lo in (("n_way", n_way, 2), ("k_shot", k_shot, 1),
                        ("n_query", n_query, 1)):
      if int(v) != v or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    self.index = _class_index(dataset, classes, k_shot + n_query,
                              "EpisodeSampler")
    self.classes = np.array(sorted(self.index))
    if n_way > len(self.classes):
      raise ValueError(f"EpisodeSampler: n_way={n_way} but only "
                       f"{len(self.classes)} classes are available "
                       f"({self.classes.tolist()}); lower n_way.")
    self.x = dataset.x
    self.modality = dataset.modality
    self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(
        n_query)
    self.seed = int(seed)

  def episode_indices(self, index: int) -> tuple[np.ndarray, np.ndarray,
                                                 np.ndarray]:
    """``(picked classes, support indices, query indices)`` of episode
    ``index``; indices into the data set, shaped ``(n_way, k)``."""
    rng = _rng(self.seed, _EPISODE, index)
    picked = rng.choice(self.classes, self.n_way, replace=False)
    k = self.k_shot
    idx = np.stack([rng.choice(self.index[int(c)], k + self.n_query,
                               replace=False) for c in picked])
    return picked, idx[:, :k], idx[:, k:]

  def episode(self, index: int) -> dict[str, np.ndarray]:
    """Episode ``index`` as ``support_x``, ``support_y``, ``query_x``,
    ``query_y`` (labels ``0..n_way-1``) and ``classes`` (the original ids)."""
    picked, s, q = self.episode_indices(index)
    ys = np.repeat(np.arange(self.n_way, dtype=np.int32), self.k_shot)
    yq = np.repeat(np.arange(self.n_way, dtype=np.int32), self.n_query)
    return {"support_x": self.x[s.reshape(-1)], "support_y": ys,
            "query_x": self.x[q.reshape(-1)], "query_y": yq,
            "classes": picked.astype(np.int32)}

  def batch(self, step: int, meta_batch_size: int) -> dict[str, np.ndarray]:
    """Episodes ``step*m .. step*m + m - 1`` stacked on a leading task axis."""
    eps = [self.episode(step * meta_batch_size + i)
           for i in range(meta_batch_size)]
    return {k: np.stack([e[k] for e in eps]) for k in eps[0]}

  def batches(self, meta_batch_size: int, start_step: int = 0
              ) -> Iterator[dict[str, np.ndarray]]:
    """Infinite iterator of meta-batches from ``start_step`` on."""
    step = start_step
    while True:
      yield self.batch(step, meta_batch_size)
      step += 1


def split_classes(num_classes: int, num_train: int, *, seed: int | None = None
                  ) -> tuple[list[int], list[int]]:
  """Disjoint meta-train / meta-test class lists.

  The first ``num_train`` classes train, the rest test; with ``seed``, a
  seeded permutation of the classes is split instead.
  """
  if not 0 < num_train < num_classes:
    raise ValueError(f"num_train must be in [1, {num_classes - 1}] so that "
                     f"both splits have classes; got {num_train}")
  order = (np.arange(num_classes) if seed is None
           else np.random.default_rng(seed).permutation(num_classes))
  return sorted(order[:num_train].tolist()), sorted(order[num_train:].tolist())


def rotated_classes(dataset: Dataset, classes: Sequence[int], rotations: int
                    ) -> tuple[Dataset, list[int]]:
  """Class augmentation by rotation: the examples of ``classes`` rotated
  by ``k * 90`` degrees (``k = 1 .. rotations - 1``) become new classes
  ``c + k * num_classes``, as Santoro et al. (2016) and Finn et al. (2017)
  augment Omniglot's meta-training alphabets (task augmentation, Liu et al.
  2020). More classes to draw tasks from is what meta-learners with few
  meta-training classes lack: with 10 they memorise them (issue 12).
  Returns the augmented data set (the examples of ``classes`` and their
  rotations only) and its class list; ``rotations=1`` returns the examples
  of ``classes`` unchanged. Meant for the meta-training split: the held-out
  classes stay as they are.

    >>> from tljax import data
    >>> ds, cls = rotated_classes(data.load("digits"), [0, 1], 4)
    >>> cls, ds.num_classes
    ([0, 1, 10, 11, 20, 21, 30, 31], 40)

  Raises:
    ValueError: unless the data are labelled square images (``(h, h, c)``)
      and ``rotations`` is 1, 2 or 4 (multiples of 90 degrees; 2 is 0 and
      180).
  """
  if rotations not in (1, 2, 4):
    raise ValueError(f"rotations must be 1 (none), 2 (0 and 180 degrees) or "
                     f"4 (multiples of 90 degrees), got {rotations!r}")
  if dataset.y is None or dataset.num_classes is None:
    raise ValueError(f"rotated_classes needs labelled data; {dataset.name!r} "
                     "has no labels.")
  shape = dataset.example_shape
  if rotations > 1 and (len(shape) != 3 or shape[0] != shape[1]):
    raise ValueError(f"rotated classes need square images (h, h, c); "
                     f"{dataset.name!r} has examples of shape {shape}. Use "
                     "rotations=1 for other data.")
  classes = [int(c) for c in classes]
  keep = np.isin(dataset.y, classes)
  x, y, n = dataset.x[keep], dataset.y[keep], dataset.num_classes
  step = 4 // rotations
  xs = [x] + [np.rot90(x, k * step, axes=(1, 2)) for k in range(1, rotations)]
  ys = [y + k * n for k in range(rotations)]
  augmented = Dataset(np.ascontiguousarray(np.concatenate(xs)),
                      np.concatenate(ys).astype(dataset.y.dtype),
                      n * rotations, dataset.name, dataset.modality)
  return augmented, [c + k * n for k in range(rotations) for c in classes]


def meta_split(train_data: Dataset, test_data: Dataset, *,
               train_classes: Sequence[int], test_classes: Sequence[int],
               n_way: int, k_shot: int, n_query: int, seed: int = 0,
               test_k_shot: int | None = None,
               test_n_query: int | None = None
               ) -> tuple[EpisodeSampler, EpisodeSampler]:
  """Meta-train and meta-test samplers on disjoint class sets.

  Args:
    train_data: where meta-training episodes come from (e.g. the train split).
    test_data: where meta-test episodes come from (e.g. the test split).
    train_classes, test_classes: disjoint class ids.
    n_way, k_shot, n_query: episode shape (``test_k_shot`` /
      ``test_n_query`` override it at meta-test time).
    seed: seed of the meta-train sampler; the test sampler uses ``seed + 1``.

  Raises:
    ValueError: if the class sets overlap, or as :class:`EpisodeSampler`.
  """
  train_classes, test_classes = list(train_classes), list(test_classes)
  overlap = sorted(set(train_classes) & set(test_classes))
  if overlap:
    raise ValueError(f"meta-train and meta-test classes must be disjoint, but "
                     f"both contain {overlap}; held-out classes must never be "
                     "seen in meta-training.")
  train = EpisodeSampler(train_data, train_classes, n_way=n_way, k_shot=k_shot,
                         n_query=n_query, seed=seed)
  test = EpisodeSampler(
      test_data, test_classes, n_way=n_way,
      k_shot=k_shot if test_k_shot is None else test_k_shot,
      n_query=n_query if test_n_query is None else test_n_query, seed=seed + 1)
  return train, test


class ClassBalancedSampler:
  """Global batches of ``classes_per_batch`` (P) classes x
  ``examples_per_class`` (M) examples: the "PK" batches of Hermans et al.
  (2017) that give every anchor positives and negatives for in-batch
  mining, and every proxy loss several examples of each class.

  Batch ``step`` is a pure function of ``(seed, step)``: P distinct classes
  drawn at random, then M distinct examples of each, grouped by class.
  Labels are the data set's. With several processes each takes its
  contiguous slice of the global batch (:meth:`batch`), as
  :func:`tljax.data.batches` does; the devices then hold different classes,
  which is why the losses gather the global batch.

    >>> from tljax import data
    >>> s = ClassBalancedSampler(data.load("digits"), classes_per_batch=3,
    ...                          examples_per_class=2)
    >>> b = s.batch(0)
    >>> b["x"].shape, len(set(b["y"].tolist()))
    ((6, 8, 8, 1), 3)

  Raises:
    ValueError: if a class has fewer than M examples, P is not in ``[2,
      classes]``, or the global batch does not split over the processes.
  """

  def __init__(self, dataset: Dataset, *, classes_per_batch: int,
               examples_per_class: int, seed: int = 0,
               classes: Sequence[int] | None = None):
    if int(examples_per_class) != examples_per_class or examples_per_class < 1:
      raise ValueError(f"examples_per_class must be an integer >= 1, got "
                       f"{examples_per_class!r}")
    self.index = _class_index(dataset, classes, examples_per_class,
                              "class_balanced_batches")
    self.classes = np.array(sorted(self.index))
    if not 2 <= classes_per_batch <= len(self.classes):
      raise ValueError(f"classes_per_batch must be in [2, "
                       f"{len(self.classes)}] (the classes available), got "
                       f"{classes_per_batch}")
    self.dataset = dataset
    self.p, self.m = int(classes_per_batch), int(examples_per_class)
    self.seed = int(seed)
    self.batch_size = self.p * self.m

  def indices(self, step: int) -> np.ndarray:
    """Data-set indices of global batch ``step``, ``(P * M,)``."""
    rng = _rng(self.seed, _BALANCED, step)
    picked = rng.choice(self.classes, self.p, replace=False)
    return np.concatenate([rng.choice(self.index[int(c)], self.m,
                                      replace=False) for c in picked])

  def batch(self, step: int, *, process_index: int | None = None,
            process_count: int | None = None) -> dict[str, np.ndarray]:
    """This process's slice of global batch ``step``: ``x``, ``y``
    (``process_*`` default to JAX's)."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if self.batch_size % pc:
      raise ValueError(f"the class-balanced batch of {self.p} x {self.m} = "
                       f"{self.batch_size} examples does not split over "
                       f"{pc} processes; make P * M divisible by {pc}.")
    per = self.batch_size // pc
    idx = self.indices(step)[pi * per:(pi + 1) * per]
    return {"x": self.dataset.x[idx],
            "y": self.dataset.y[idx].astype(np.int32)}

  def batches(self, start_step: int = 0, **process) -> Iterator[dict]:
    """Infinite iterator of :meth:`batch` from ``start_step`` on."""
    self.batch(start_step, **process)  # checks, before yielding
    step = start_step
    while True:
      yield self.batch(step, **process)
      step += 1


def class_balanced_batches(dataset: Dataset, *, classes_per_batch: int,
                           examples_per_class: int, seed: int = 0,
                           classes: Sequence[int] | None = None,
                           start_step: int = 0, **process
                           ) -> Iterator[dict[str, np.ndarray]]:
  """``ClassBalancedSampler(...).batches(start_step)``: batches of
  ``classes_per_batch`` classes x ``examples_per_class`` each (this
  process's slice; ``process_index`` / ``process_count`` as in
  :meth:`ClassBalancedSampler.batch`)."""
  return ClassBalancedSampler(
      dataset, classes_per_batch=classes_per_batch,
      examples_per_class=examples_per_class, seed=seed,
      classes=classes).batches(start_step, **process)


def pair_batches(dataset: Dataset, batch_size: int, *, seed: int = 0,
                 classes: Sequence[int] | None = None,
                 positive_fraction: float = 0.5, start_step: int = 0
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Batches of pairs ``x1``, ``x2``, ``same`` (1 if the same class).

  Half the pairs (``positive_fraction``) show two different examples of one
  class, the rest two classes (Hadsell et al. 2006's Siamese training).
  """
  index = _class_index(dataset, classes, 2, "pair_batches")
  all_classes = np.array(sorted(index))
  if len(all_classes) < 2:
    raise ValueError("pair_batches needs at least two classes")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  num_pos = int(round(batch_size * positive_fraction))
  step = start_step
  while True:
    rng = _rng(seed, _PAIRS, step)
    i1, i2 = [], []
    for j in range(batch_size):
      if j < num_pos:
        c = rng.choice(all_classes)
        a, b = rng.choice(index[int(c)], 2, replace=False)
      else:
        c1, c2 = rng.choice(all_classes, 2, replace=False)
        a, b = rng.choice(index[int(c1)]), rng.choice(index[int(c2)])
      i1.append(a)
      i2.append(b)
    same = (np.arange(batch_size) < num_pos).astype(np.int32)
    perm = rng.permutation(batch_size)
    i1, i2 = np.asarray(i1)[perm], np.asarray(i2)[perm]
    yield {"x1": dataset.x[i1], "x2": dataset.x[i2], "same": same[perm],
           "y1": dataset.y[i1], "y2": dataset.y[i2]}
    step += 1


class SinusoidTasks:
  """The sinusoid regression task family of MAML (Finn et al. 2017, 5.1).

  Task ``i``: ``y = A sin(x - phase)`` with amplitude ``A ~ U[0.1, 5]`` and
  ``phase ~ U[0, pi]``; inputs ``x ~ U[-5, 5]``. ``x`` and ``y`` are shaped
  ``(points, 1)``.

  Args:
    seed: the family's seed (use different seeds for meta-train and test).
    amplitude, phase, x_range: the ranges above.
  """

  def __init__(self, seed: int = 0, *,
               amplitude: tuple[float, float] = (0.1, 5.0),
               phase: tuple[float, float] = (0.0, np.pi),
               x_range: tuple[float, float] = (-5.0, 5.0)):
    for name, (lo, hi) in (("amplitude", amplitude), ("phase", phase),
                           ("x_range", x_range)):
      if not lo <= hi:
        raise ValueError(f"{name} range must be (low, high) with low <= high, "
                         f"got {(lo, hi)}")
    self.seed = int(seed)
    self.amplitude, self.phase, self.x_range = amplitude, phase, x_range

  def task(self, index: int, k_shot: int, n_query: int
           ) -> dict[str, np.ndarray]:
    """Task ``index``: ``support_x/y`` (``k_shot`` points), ``query_x/y``
    (``n_query`` points), ``amplitude`` and ``phase``."""
    if k_shot < 1 or n_query < 1:
      raise ValueError(f"k_shot and n_query must be >= 1, got {k_shot}, "
                       f"{n_query}")
    rng = _rng(self.seed, _SINE, index)
    amp = rng.uniform(*self.amplitude)
    ph = rng.uniform(*self.phase)
    x = rng.uniform(*self.x_range, size=(k_shot + n_query, 1))
    y = amp * np.sin(x - ph)
    x, y = x.astype(np.float32), y.astype(np.float32)
    return {"support_x": x[:k_shot], "support_y": y[:k_shot],
            "query_x": x[k_shot:], "query_y": y[k_shot:],
            "amplitude": np.float32(amp), "phase": np.float32(ph)}

  def batch(self, step: int, meta_batch_size: int, k_shot: int,
            n_query: int) -> dict[str, np.ndarray]:
    tasks = [self.task(step * meta_batch_size + i, k_shot, n_query)
             for i in range(meta_batch_size)]
    return {k: np.stack([t[k] for t in tasks]) for k in tasks[0]}

  def batches(self, meta_batch_size: int, k_shot: int, n_query: int,
              start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    step = start_step
    while True:
      yield self.batch(step, meta_batch_size, k_shot, n_query)
      step += 1


def mean_ci95(values) -> tuple[float, float]:
  """Mean and the half-width of its normal 95% interval, ``1.96 s/sqrt(n)``,
  over per-episode values (the usual few-shot report, Snell et al. 2017)."""
  v = np.asarray(values, np.float64).reshape(-1)
  if v.size == 0:
    raise ValueError("mean_ci95 needs at least one value")
  if not np.all(np.isfinite(v)):
    raise ValueError("mean_ci95: values contain NaN or Inf")
  half = 1.96 * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0
  return float(v.mean()), float(half)
