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
    # The margin is traced: one compilation per shape, not per margin.
    fn = jax.jit(lambda e, y, m: losses.triplet_loss(
        e, y, margin=m, mining=mining, distance=kind))
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
    got = jax.jit(lambda e: losses.triplet_loss(
        e, jnp.array([0, 0, 1]), margin=1.0, mining="hard"))(emb)
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
    # The margin is traced: each formulation compiles once per case.
    new, plain = (jax.jit(jax.value_and_grad(
        lambda e, y, m, f=f: f(e, y, margin=m, mining=mining,
                               distance=kind))) for f in (
                                   losses.triplet_loss,
                                   metric._plain_triplet_loss))
    for margin in (0.0, 1.0, 0.3):
      margin = np.float32(margin)
      for seed in range(3):
        for name, emb, labels in _plain_cases(seed):
          labels = labels.astype(np.int32)
          (got, g_got), (want, g_want) = (new(emb, labels, margin),
                                          plain(emb, labels, margin))
          msg = f"{name}, margin {margin}, seed {seed}"
          np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                     err_msg=msg)
          np.testing.assert_allclose(g_got, g_want, rtol=1e-5, atol=1e-6,
                                     err_msg=msg)

  def test_tiny_batches(self):
    # Labels are arguments: the two 2-example batches share compilations.
    fns = {(m, f): jax.jit(jax.value_and_grad(
        lambda e, y, m=m, f=f: f(e, y, margin=0.5, mining=m)))
           for m in ("all", "hard", "semi_hard")
           for f in (losses.triplet_loss, metric._plain_triplet_loss)}
    for emb, labels in ((np.ones((1, 2)), [0]), (np.eye(2), [3, 3]),
                        (np.eye(2), [0, 1]), (np.eye(3), [0, 0, 1])):
      emb = np.asarray(emb, np.float32)
      labels = np.asarray(labels, np.int32)
      for mining in ("all", "hard", "semi_hard"):
        got, want = (fns[mining, f](emb, labels) for f in (
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


# ------------------------------------------------- similarity-based losses
def _np_cos(u, v):
  u = np.asarray(u, np.float64)
  v = np.asarray(v, np.float64)
  return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def _np_supcon(e, y, t):
  n, per_anchor = len(y), []
  for i in range(n):
    ps = [j for j in range(n) if j != i and y[j] == y[i]]
    if not ps:
      continue
    denom = sum(np.exp(_np_cos(e[i], e[a]) / t) for a in range(n) if a != i)
    per_anchor.append(-np.mean([np.log(np.exp(_np_cos(e[i], e[p]) / t)
                                       / denom) for p in ps]))
  return np.mean(per_anchor) if per_anchor else 0.0


def _np_ntxent(e, y, t):
  n, terms = len(y), []
  for i, p in itertools.permutations(range(n), 2):
    if y[i] != y[p]:
      continue
    num = np.exp(_np_cos(e[i], e[p]) / t)
    neg = sum(np.exp(_np_cos(e[i], e[k]) / t) for k in range(n)
              if y[k] != y[i])
    terms.append(-np.log(num / (num + neg)))
  return np.mean(terms) if terms else 0.0


def _np_multi_similarity(e, y, alpha, beta, base, eps):
  n, out = len(y), []
  for i in range(n):
    s = {j: _np_cos(e[i], e[j]) for j in range(n)}
    ps = [j for j in range(n) if j != i and y[j] == y[i]]
    ns = [k for k in range(n) if y[k] != y[i]]
    if eps is not None:  # Wang et al. 2019, eq. 7 and 8
      ps, ns = ([j for j in ps if ns and s[j] - eps < max(s[k] for k in ns)],
                [k for k in ns if ps and s[k] + eps > min(s[j] for j in ps)])
    out.append(np.log(1 + sum(np.exp(-alpha * (s[j] - base)) for j in ps))
               / alpha
               + np.log(1 + sum(np.exp(beta * (s[k] - base)) for k in ns))
               / beta)
  return np.mean(out)


def _np_margin_softmax(e, y, w, target, scale):
  ce = []
  for i in range(len(y)):
    logits = [scale * (target(_np_cos(e[i], w[c])) if c == y[i]
                       else _np_cos(e[i], w[c])) for c in range(len(w))]
    ce.append(np.log(np.sum(np.exp(logits))) - logits[y[i]])
  return np.mean(ce)


def _np_arcface(e, y, w, m, s):
  def target(c):
    theta = np.arccos(c)
    return np.cos(theta + m) if theta <= np.pi - m else c - m * np.sin(m)
  return _np_margin_softmax(e, y, w, target, s)


def _np_cosface(e, y, w, m, s):
  return _np_margin_softmax(e, y, w, lambda c: c - m, s)


def _np_proxy_anchor(e, y, proxies, margin, alpha):
  classes = range(len(proxies))
  with_pos = [c for c in classes if np.any(y == c)]
  s = lambda i, c: _np_cos(e[i], proxies[c])  # noqa: E731
  pos = sum(np.log(1 + sum(np.exp(-alpha * (s(i, c) - margin))
                           for i in range(len(y)) if y[i] == c))
            for c in with_pos)
  neg = sum(np.log(1 + sum(np.exp(alpha * (s(i, c) + margin))
                           for i in range(len(y)) if y[i] != c))
            for c in classes)
  return pos / max(len(with_pos), 1) + neg / len(proxies)


# name: (tljax loss, numpy reference, keyword arguments, uses the class
# matrix). Moderate scales keep float32 exact to ~1e-6 relative.
NEW_LOSSES = {
    "supcon": (losses.supcon_loss, _np_supcon, dict(temperature=0.3), False),
    "ntxent": (losses.ntxent_loss, _np_ntxent, dict(temperature=0.3), False),
    "multi_similarity": (
        losses.multi_similarity_loss, _np_multi_similarity,
        dict(alpha=2.0, beta=10.0, base=0.5, epsilon=0.1), False),
    "multi_similarity_unmined": (
        losses.multi_similarity_loss, _np_multi_similarity,
        dict(alpha=2.0, beta=10.0, base=0.5, epsilon=None), False),
    "arcface": (losses.arcface_loss, _np_arcface,
                dict(margin=0.5, scale=8.0), True),
    "arcface_wide_margin": (losses.arcface_loss, _np_arcface,
                            dict(margin=1.4, scale=8.0), True),
    "cosface": (losses.cosface_loss, _np_cosface,
                dict(margin=0.35, scale=8.0), True),
    "proxy_anchor": (losses.proxy_anchor_loss, _np_proxy_anchor,
                     dict(margin=0.1, alpha=8.0), True),
}


def _new_loss_inputs(seed):
  """Ten 4-D embeddings of (up to) 4 classes, one possibly absent, and a
  class matrix of 4 rows: the same shapes every time (one compilation)."""
  rng = np.random.default_rng(seed)
  e = rng.normal(size=(10, 4)).astype(np.float32)
  y = rng.integers(0, 4, size=10).astype(np.int32)
  w = rng.normal(size=(4, 4)).astype(np.float32)
  return e, y, w


def _call(name, e, y, w):
  fn, _, kw, uses_w = NEW_LOSSES[name]
  return fn(e, y, w, **kw) if uses_w else fn(e, y, **kw)


_JITTED = {}


def _value_and_grad(name):
  if name not in _JITTED:
    _JITTED[name] = jax.jit(jax.value_and_grad(
        lambda e, y, w: _call(name, e, y, w), argnums=(0, 2)))
  return _JITTED[name]


class SimilarityLossTest(parameterized.TestCase):

  @parameterized.named_parameters([(n, n) for n in NEW_LOSSES])
  def test_matches_brute_force(self, name):
    _, reference, kw, uses_w = NEW_LOSSES[name]
    for seed in range(3):
      e, y, w = _new_loss_inputs(seed)
      got, grads = _value_and_grad(name)(e, y, w)
      want = (reference(e, y, w, *kw.values()) if uses_w
              else reference(e, y, *kw.values()))
      self.assertGreater(want, 0.01)
      np.testing.assert_allclose(float(got), want, rtol=1e-5,
                                 err_msg=f"seed {seed}")
      self.assertTrue(all(bool(jnp.all(jnp.isfinite(g))) for g in grads))

  @parameterized.named_parameters([(n, n) for n in NEW_LOSSES])
  def test_equals_pytorch_metric_learning_loss_and_gradient(self, name):
    import torch  # the test extra installs torch and pytorch-metric-learning
    from pytorch_metric_learning import losses as pml_losses
    from pytorch_metric_learning import miners as pml_miners
    _, _, kw, uses_w = NEW_LOSSES[name]
    for seed in range(2):
      e, y, w = _new_loss_inputs(seed + 10)
      te = torch.tensor(e, requires_grad=True)
      ty = torch.tensor(y.astype(np.int64))
      args = ()
      if name == "supcon":
        loss = pml_losses.SupConLoss(temperature=kw["temperature"])
      elif name == "ntxent":
        loss = pml_losses.NTXentLoss(temperature=kw["temperature"])
      elif name.startswith("multi_similarity"):
        loss = pml_losses.MultiSimilarityLoss(kw["alpha"], kw["beta"],
                                              kw["base"])
        if kw["epsilon"] is not None:
          args = (pml_miners.MultiSimilarityMiner(kw["epsilon"])(te, ty),)
      elif name.startswith("arcface"):
        loss = pml_losses.ArcFaceLoss(4, 4, margin=np.degrees(kw["margin"]),
                                      scale=kw["scale"])
        loss.W.data = torch.tensor(w.T.copy())
      elif name == "cosface":
        loss = pml_losses.CosFaceLoss(4, 4, **kw)
        loss.W.data = torch.tensor(w.T.copy())
      else:
        loss = pml_losses.ProxyAnchorLoss(4, 4, **kw)
        loss.proxies.data = torch.tensor(w)
      value = loss(te, ty, *args)
      value.backward()
      got, (g_e, g_w) = _value_and_grad(name)(e, y, w)
      np.testing.assert_allclose(float(got), value.item(), rtol=1e-5,
                                 err_msg=f"seed {seed}")
      np.testing.assert_allclose(g_e, te.grad.numpy(), rtol=1e-4, atol=1e-6)
      if uses_w:
        pw = loss.W.grad.numpy().T if hasattr(loss, "W") else (
            loss.proxies.grad.numpy())
        np.testing.assert_allclose(g_w, pw, rtol=1e-4, atol=1e-6)

  def test_multi_similarity_miner_by_hand(self):
    # Anchor 0: positives at similarity 0.9 (index 1) and 0.2 (index 2),
    # negatives at 0.3 (index 3) and -0.5 (index 4); epsilon 0.1.
    s = np.eye(5, dtype=np.float32)
    s[0, 1:] = [0.9, 0.2, 0.3, -0.5]
    y = np.array([0, 0, 0, 1, 1])
    pos, neg = jax.jit(lambda s, y: losses.multi_similarity_miner(
        s, y, epsilon=0.1))(s, y)
    # 0.9 - 0.1 < 0.3? no; 0.2 - 0.1 < 0.3? yes. 0.3 + 0.1 > 0.2? yes;
    # -0.5 + 0.1 > 0.2? no.
    np.testing.assert_array_equal(pos[0], [False, False, True, False, False])
    np.testing.assert_array_equal(neg[0], [False, False, False, True, False])

  def test_no_pairs_give_zero_with_finite_gradients(self):
    # Ten classes of one example: no positive pair (so multi-similarity
    # mines no negative either). The compiled functions above are reused.
    e, _, w = _new_loss_inputs(0)
    y = np.arange(10, dtype=np.int32)
    for name in ("supcon", "ntxent", "multi_similarity"):
      v, (g, _) = _value_and_grad(name)(e, y, w)
      self.assertEqual(float(v), 0.0, name)
      self.assertTrue(bool(jnp.all(jnp.isfinite(g))), name)

  def test_non_finite_embedding_gives_nan(self):
    e, y, w = _new_loss_inputs(0)
    e[3, 1] = np.nan
    for name in NEW_LOSSES:
      self.assertTrue(np.isnan(float(_value_and_grad(name)(e, y, w)[0])),
                      name)

  @parameterized.named_parameters(
      ("temperature", losses.supcon_loss, (), {"temperature": 0.0},
       "temperature must be > 0"),
      ("ntxent_temperature", losses.ntxent_loss, (), {"temperature": -1.0},
       "temperature must be > 0"),
      ("beta", losses.multi_similarity_loss, (), {"beta": 0.0},
       "beta must be > 0"),
      ("matrix", losses.arcface_loss, (jnp.zeros((3, 5)),), {},
       "shape \\(classes, 2\\)"),
      ("margin", losses.arcface_loss, (jnp.zeros((3, 2)),), {"margin": 2.0},
       "radians"),
      ("proxies", losses.proxy_anchor_loss, (jnp.zeros(3),), {},
       "one row per class"),
      ("labels", losses.cosface_loss, (jnp.zeros((3, 2)),), {},
       "labels must have shape"),
  )
  def test_bad_input_raises(self, fn, extra, kwargs, msg):
    y = jnp.zeros(3 if msg == "labels must have shape" else 4, jnp.int32)
    with pytest.raises(ValueError, match=msg):
      fn(jnp.ones((4, 2)), y, *extra, **kwargs)
