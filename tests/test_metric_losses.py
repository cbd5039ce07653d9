"""Contrastive and triplet losses against brute-force numpy references."""

from __future__ import annotations

import itertools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import losses
from tljax.losses import metric


def _np_dist(u, v, kind):
  u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
  if kind == "l2":
    return float(np.sqrt(np.sum((u - v) ** 2)))
  if kind == "squared_l2":
    return float(np.sum((u - v) ** 2))
  return float(1.0 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def _brute_force_triplet(emb, labels, margin, mining, kind):
  """Loops over every (anchor, positive, negative) with plain Python."""
  n = len(labels)
  d = [[_np_dist(emb[i], emb[j], kind) for j in range(n)] for i in range(n)]
  if mining == "all":
    vals = []
    for a, p, q in itertools.product(range(n), repeat=3):
      if a != p and labels[a] == labels[p] and labels[q] != labels[a]:
        vals.append(max(d[a][p] - d[a][q] + margin, 0.0))
    active = [v for v in vals if v > 1e-16]
    return sum(active) / len(active) if active else 0.0
  if mining == "hard":
    vals = []
    for a in range(n):
      ps = [d[a][p] for p in range(n) if p != a and labels[p] == labels[a]]
      ns = [d[a][q] for q in range(n) if labels[q] != labels[a]]
      if ps and ns:
        vals.append(max(max(ps) - min(ns) + margin, 0.0))
    return sum(vals) / len(vals) if vals else 0.0
  # semi_hard (FaceNet; farthest negative when none is beyond the positive).
  vals = []
  for a in range(n):
    ns = [d[a][q] for q in range(n) if labels[q] != labels[a]]
    if not ns:
      continue
    for p in range(n):
      if p == a or labels[p] != labels[a]:
        continue
      beyond = [x for x in ns if x > d[a][p]]
      dn = min(beyond) if beyond else max(ns)
      vals.append(max(d[a][p] - dn + margin, 0.0))
  return sum(vals) / len(vals) if vals else 0.0


CASES = [(m, k) for m in ("all", "hard", "semi_hard")
         for k in ("l2", "squared_l2", "cosine")]


class TripletLossTest(parameterized.TestCase):

  @parameterized.named_parameters(
      [(f"{m}_{k}", m, k) for m, k in CASES])
  def test_matches_brute_force(self, mining, kind):
    rng = np.random.default_rng(0)
    fn = jax.jit(lambda e, y, m: losses.triplet_loss(
        e, y, margin=m, mining=mining, distance=kind), static_argnums=2)
    for trial in range(6):
      n = (5, 9)[trial % 2]  # two shapes: two compilations per case
      emb = rng.normal(size=(n, 3)).astype(np.float32)
      labels = rng.integers(0, 3, size=n).astype(np.int32)
      # Large margins make many triplets active; small ones make few.
      margin = (0.05, 0.3, 1.0, 3.0, 0.0, 0.5)[trial]
      got = float(fn(emb, labels, margin))
      want = _brute_force_triplet(emb, labels, margin, mining, kind)
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6,
                                 err_msg=f"trial {trial}, n={n}")

  @parameterized.named_parameters([(m, m) for m in ("all", "hard",
                                                    "semi_hard")])
  def test_no_valid_triplet_is_zero(self, mining):
    emb = jnp.arange(6.0).reshape(3, 2)
    for labels in (jnp.array([0, 1, 2]), jnp.array([4, 4, 4])):
      self.assertEqual(float(losses.triplet_loss(emb, labels, mining=mining)),
                       0.0)

  def test_hand_computed_hard(self):
    # 1-D: anchors 0 (pos 1 at d=1, neg at d=1.5) and 1 (pos d=1, neg 0.5).
    emb = jnp.array([[0.0], [1.0], [1.5]])
    got = losses.triplet_loss(emb, jnp.array([0, 0, 1]), margin=1.0,
                              mining="hard")
    np.testing.assert_allclose(got, ((1 - 1.5 + 1) + (1 - 0.5 + 1)) / 2)

  def test_gradient_finite_at_coincident_points(self):
    emb = jnp.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    y = jnp.array([0, 0, 1, 1])
    for mining in ("all", "hard", "semi_hard"):
      g = jax.jit(jax.grad(lambda e: losses.triplet_loss(  # noqa: B023
          e, y, margin=2.0, mining=mining)))(emb)
      self.assertTrue(bool(jnp.all(jnp.isfinite(g))), mining)

  def test_gradient_matches_finite_difference(self):
    # Central differences of the float64 brute-force reference; the step is
    # small enough not to cross the points where mining switches triplets.
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(6, 2))
    y = np.array([0, 0, 1, 1, 2, 2])
    for mining in ("all", "hard", "semi_hard"):
      g = np.asarray(jax.jit(jax.grad(lambda e: losses.triplet_loss(  # noqa: B023
          e, y, margin=1.0, mining=mining)))(jnp.asarray(emb, jnp.float32)))
      eps = 1e-6
      fd = np.zeros_like(emb)
      for i, j in itertools.product(range(6), range(2)):
        e1, e2 = emb.copy(), emb.copy()
        e1[i, j] += eps
        e2[i, j] -= eps
        fd[i, j] = (_brute_force_triplet(e1, y, 1.0, mining, "l2")
                    - _brute_force_triplet(e2, y, 1.0, mining, "l2")) / (2 * eps)
      self.assertGreater(np.abs(fd).max(), 0.05)  # some triplets are active
      np.testing.assert_allclose(g, fd, atol=1e-4, err_msg=mining)

  @parameterized.named_parameters(
      ("embeddings_1d", jnp.zeros(4), jnp.zeros(4, jnp.int32), {},
       "shape \\(batch, dim\\)"),
      ("labels_length", jnp.zeros((4, 2)), jnp.zeros(3, jnp.int32), {},
       "labels must have shape \\(4,\\)"),
      ("empty", jnp.zeros((0, 2)), jnp.zeros(0, jnp.int32), {}, "empty"),
      ("mining", jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32),
       {"mining": "hardest"}, "unknown mining"),
      ("distance", jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32),
       {"distance": "l1"}, "unknown distance"),
      ("margin", jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32),
       {"margin": -1.0}, "margin must be >= 0"),
  )
  def test_bad_input_raises(self, emb, labels, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
      losses.triplet_loss(emb, labels, **kwargs)


def _plain_cases(seed):
  """Batches of 10 three-dimensional embeddings, built to hit the corners:
  integer coordinates (exact, often tied distances, so hinges are exactly 0
  and hardest or nearest negatives tie), duplicated embeddings within and
  across classes, classes of one example, one class, all distinct.

  Duplicates have coordinates in quarters, so that their distance is exactly
  0: with general floats ``|a|^2 + |b|^2 - 2 a.b`` leaves a rounding residue
  whose square root has a huge derivative, in both formulations alike.
  """
  rng = np.random.default_rng(seed)
  grid = lambda: rng.integers(-1, 3, size=(10, 3)).astype(np.float32)  # noqa: E731
  normal = lambda: rng.normal(size=(10, 3)).astype(np.float32)  # noqa: E731
  dup = rng.integers(-8, 9, size=(10, 3)).astype(np.float32) / 4
  dup[3], dup[7], dup[8] = dup[0], dup[0], dup[5]  # same class and across
  yield "grid, 3 classes", grid(), rng.integers(0, 3, size=10)
  yield "grid, 2 classes", grid(), np.array([0, 1] * 5)
  yield "normal, singletons", normal(), np.array([0, 0, 0, 1, 2, 2, 3, 3, 3,
                                                  4])
  yield "duplicates", dup, np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
  yield "grid duplicates", np.repeat(grid()[:5], 2, axis=0), np.array(
      [0, 1, 0, 1, 1, 1, 2, 2, 0, 2])
  yield "one class", normal(), np.zeros(10, np.int64)
  yield "all distinct", normal(), np.arange(10)


class TripletPlainFormulationTest(parameterized.TestCase):
  """The O(B^2)-memory code against the (B, B, B) masks it replaced."""

  @parameterized.named_parameters(
      [(f"{m}_{k}", m, k) for m, k in CASES])
  def test_loss_and_gradient_equal_the_plain_formulation(self, mining, kind):
    for margin in (0.0, 1.0, 0.3):
      new, plain = (jax.jit(jax.value_and_grad(
          lambda e, y, f=f: f(e, y, margin=margin, mining=mining,  # noqa: B023
                              distance=kind))) for f in (
                                  losses.triplet_loss,
                                  metric._plain_triplet_loss))
      for seed in range(3):
        for name, emb, labels in _plain_cases(seed):
          labels = labels.astype(np.int32)
          (got, g_got), (want, g_want) = new(emb, labels), plain(emb, labels)
          msg = f"{name}, margin {margin}, seed {seed}"
          np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                     err_msg=msg)
          np.testing.assert_allclose(g_got, g_want, rtol=1e-5, atol=1e-6,
                                     err_msg=msg)

  def test_tiny_batches(self):
    for emb, labels in ((np.ones((1, 2)), [0]), (np.eye(2), [3, 3]),
                        (np.eye(2), [0, 1]), (np.eye(3), [0, 0, 1])):
      emb = np.asarray(emb, np.float32)
      labels = np.asarray(labels, np.int32)
      for mining in ("all", "hard", "semi_hard"):
        got, want = (jax.jit(jax.value_and_grad(lambda e, f=f: f(  # noqa: B023
            e, labels, margin=0.5, mining=mining)))(emb) for f in (
                losses.triplet_loss, metric._plain_triplet_loss))
        chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)

  @parameterized.named_parameters([(m, m) for m in ("all", "hard",
                                                    "semi_hard")])
  def test_second_derivative_equals_the_plain_formulation(self, mining):
    # Forward mode works too: the loss is piecewise linear in the distances,
    # and the curvature comes from the distances themselves.
    emb = np.random.default_rng(2).normal(size=(8, 2)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2], np.int32)
    got, want = (jax.jit(jax.hessian(lambda e, f=f: f(  # noqa: B023
        e, labels, margin=1.0, mining=mining)))(emb) for f in (
            losses.triplet_loss, metric._plain_triplet_loss))
    self.assertGreater(float(jnp.abs(want).max()), 0.01)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

  @parameterized.named_parameters([(m, m) for m in ("all", "hard",
                                                    "semi_hard")])
  def test_memory_is_quadratic_in_the_batch(self, mining):
    # XLA's buffer assignment, not a measurement: at B = 2048 the plain
    # (B, B, B) masks would need tens of GiB; here a few (B, B) arrays.
    b = 2048
    compiled = jax.jit(jax.value_and_grad(lambda e, y: losses.triplet_loss(
        e, y, mining=mining))).lower(
            jax.ShapeDtypeStruct((b, 8), jnp.float32),
            jax.ShapeDtypeStruct((b,), jnp.int32)).compile()
    self.assertLess(compiled.memory_analysis().temp_size_in_bytes,
                    16 * b * b * 4)

  @parameterized.named_parameters(
      [(f"{m}_{k}", m, k) for m, k in CASES])
  def test_non_finite_embedding_gives_nan_loss(self, mining, kind):
    # Not a finite loss with NaN gradients (the l2 distance's safe sqrt
    # maps NaN to 0): the trainer's NaN stop must see it.
    emb = np.random.default_rng(3).normal(size=(6, 2)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2], np.int32)
    f = jax.jit(jax.value_and_grad(lambda e: losses.triplet_loss(
        e, labels, margin=0.5, mining=mining, distance=kind)))
    for bad in (np.nan, np.inf):
      e = emb.copy()
      e[4, 1] = bad
      loss, _ = f(e)
      self.assertTrue(np.isnan(float(loss)), (bad, float(loss)))
      self.assertTrue(np.isnan(float(losses.triplet_loss(
          e, labels, mining=mining, distance=kind))))
    self.assertTrue(np.isfinite(float(f(emb)[0])))


class ContrastiveLossTest(parameterized.TestCase):

  def test_by_hand(self):
    a = jnp.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = jnp.array([[3.0, 4.0], [0.3, 0.4], [1.0, 1.0], [2.0, 2.5]])
    same = jnp.array([1, 0, 0, 1])
    # distances 5, 0.5, 0, 2.5; pos_margin 1, neg_margin 2:
    # same d=5: .5*(5-1)^2 = 8; diff d=.5: .5*(2-.5)^2 = 1.125;
    # diff d=0: .5*4 = 2; same d=2.5: .5*1.5^2 = 1.125.
    got = losses.contrastive_loss(a, b, same, pos_margin=1.0, neg_margin=2.0)
    np.testing.assert_allclose(got, [8, 1.125, 2, 1.125], rtol=1e-6)
    # Squared distances 25, .25, 0, 6.25 with margins 1 and 2:
    # .5*24^2=288, .5*1.75^2=1.53125, 2, .5*5.25^2=13.78125.
    got = losses.contrastive_loss(a, b, same, pos_margin=1.0, neg_margin=2.0,
                                  distance="squared_l2")
    np.testing.assert_allclose(got, [288, 1.53125, 2, 13.78125], rtol=1e-6)
    # The one reducer: weights pick out the second and third pairs.
    got = losses.weighted_mean(got, jnp.array([0.0, 1.0, 1.0, 0.0]))
    np.testing.assert_allclose(got, (1.53125 + 2) / 2, rtol=1e-6)

  def test_cosine_by_hand(self):
    a = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    b = jnp.array([[0.0, 2.0], [1.0, 1.0]])
    # cosine distances 1 and 1 - 1/sqrt(2); pair 0 similar, pair 1 not.
    d1 = 1 - 1 / np.sqrt(2)
    want = [0.5 * 1.0 ** 2, 0.5 * (0.5 - d1) ** 2]
    got = losses.contrastive_loss(a, b, jnp.array([True, False]),
                                  neg_margin=0.5, distance="cosine")
    np.testing.assert_allclose(got, want, rtol=1e-6)

  def test_within_margins_is_zero_with_zero_grad(self):
    a = jnp.array([[0.0, 0.0], [0.0, 0.0]])
    b = jnp.array([[0.1, 0.0], [3.0, 0.0]])
    f = lambda b: losses.contrastive_loss(  # noqa: E731
        a, b, jnp.array([1, 0]), pos_margin=0.2, neg_margin=2.0).sum()
    self.assertEqual(float(f(b)), 0.0)
    chex.assert_trees_all_close(jax.jit(jax.grad(f))(b), jnp.zeros_like(b))

  @parameterized.named_parameters(
      ("shapes", jnp.zeros((3, 2)), jnp.zeros((3, 4)), jnp.zeros(3), {},
       "both have shape"),
      ("same_len", jnp.zeros((3, 2)), jnp.zeros((3, 2)), jnp.zeros(2), {},
       "same must have shape \\(3,\\)"),
      ("empty", jnp.zeros((0, 2)), jnp.zeros((0, 2)), jnp.zeros(0), {},
       "no pairs"),
      ("margins", jnp.zeros((3, 2)), jnp.zeros((3, 2)), jnp.zeros(3),
       {"pos_margin": 1.0, "neg_margin": 0.5}, "pos_margin < neg_margin"),
      ("distance", jnp.zeros((3, 2)), jnp.zeros((3, 2)), jnp.zeros(3),
       {"distance": "manhattan"}, "unknown distance"),
  )
  def test_bad_input_raises(self, a, b, same, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
      losses.contrastive_loss(a, b, same, **kwargs)
