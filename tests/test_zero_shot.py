"""Zero-shot learning: hinge ranking and attribute losses against numpy and
hand calculations, DAP scoring by hand, class descriptions, split checks,
and an end-to-end check that unseen classes are recognised on synthetic data
whose inputs are generated from the class attributes."""

from __future__ import annotations


from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax import losses
from tljax import models
from tljax.methods import zero_shot as zs
from tljax.train import trainer as trainer_lib


def _np_hinge(scores, labels, margin, reduction):
  """Plain Python loops over examples and wrong classes."""
  out = []
  for s, y in zip(np.asarray(scores, np.float64), labels):
    wrong = [s[j] for j in range(len(s)) if j != y]
    if reduction == "max":
      out.append(max(0.0, margin - s[y] + max(wrong)))
    else:
      out.append(sum(max(0.0, margin - s[y] + w) for w in wrong))
  return np.array(out)


class HingeRankingTest(parameterized.TestCase):

  def test_hand_computed(self):
    # Row 0: 1 - 2 + 1.5 = 0.5 (max) ; sum adds max(0, 1 - 2 - 1) = 0.
    # Row 1: true class 2 scores 3, best wrong 0.5: 1 - 3 + 0.5 < 0 -> 0.
    # Row 2: true class 1 scores -1, wrong 0 and 2: max: 1 + 1 + 2 = 4;
    #        sum: (1 + 1 + 0) + (1 + 1 + 2) = 6.
    scores = jnp.array([[2.0, 1.5, -1.0], [0.5, 0.0, 3.0], [0.0, -1.0, 2.0]])
    labels = jnp.array([0, 2, 1])
    np.testing.assert_allclose(losses.hinge_ranking_loss(
        scores, labels, margin=1.0), [0.5, 0, 4], atol=1e-6)
    np.testing.assert_allclose(losses.hinge_ranking_loss(
        scores, labels, margin=1.0, reduction="sum"), [0.5, 0, 6], atol=1e-6)

  @parameterized.product(reduction=["max", "sum"], margin=[0.1, 1.0, 2.5])
  def test_matches_numpy(self, reduction, margin):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(12, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 12)
    weights = rng.uniform(0.1, 2.0, 12).astype(np.float32)
    ref = _np_hinge(scores, labels, margin, reduction)
    got = losses.hinge_ranking_loss(jnp.asarray(scores), jnp.asarray(labels),
                                    margin=margin, reduction=reduction)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    got_w = losses.weighted_mean(got, jnp.asarray(weights))
    np.testing.assert_allclose(float(got_w), (weights * ref).sum()
                               / weights.sum(), rtol=1e-5)

  def test_gradient_is_minus_one_on_true_plus_one_on_rival(self):
    # max form, active hinge: d/ds_y = -1, d/ds_rival = +1, others 0 (per
    # example, then divided by the batch size 1).
    scores = jnp.array([[0.2, 0.9, -0.5, 0.1]])
    g = jax.grad(lambda s: losses.hinge_ranking_loss(s, jnp.array([0]))[0])(
        scores)
    chex.assert_trees_all_close(g, jnp.array([[-1.0, 1.0, 0.0, 0.0]]))
    # Finite differences agree on a generic point.
    rng = np.random.default_rng(1)
    s0 = rng.normal(size=(3, 4))
    y = jnp.array([1, 3, 0])
    f = lambda s: float(losses.hinge_ranking_loss(  # noqa: E731
        jnp.asarray(s, jnp.float32), y, reduction="sum").mean())
    g = np.asarray(jax.grad(lambda s: losses.hinge_ranking_loss(
        s, y, reduction="sum").mean())(jnp.asarray(s0, jnp.float32)))
    eps = 1e-3
    for i, j in [(0, 0), (0, 1), (1, 3), (2, 2)]:
      d = np.zeros_like(s0)
      d[i, j] = eps
      np.testing.assert_allclose((f(s0 + d) - f(s0 - d)) / (2 * eps), g[i, j],
                                 atol=2e-3)

  @parameterized.named_parameters(
      ("scores_1d", jnp.zeros(3), jnp.zeros(3, int), "shape \\(batch, num"),
      ("one_class", jnp.zeros((3, 1)), jnp.zeros(3, int), "two classes"),
      ("labels", jnp.zeros((3, 4)), jnp.zeros(2, int), "labels must have"),
  )
  def test_bad_input(self, scores, labels, msg):
    with pytest.raises(ValueError, match=msg):
      losses.hinge_ranking_loss(scores, labels)
    with pytest.raises(ValueError, match="unknown reduction"):
      losses.hinge_ranking_loss(jnp.zeros((2, 3)), jnp.zeros(2, int),
                                reduction="mean")


def test_attribute_loss_matches_numpy_bce():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 4)).astype(np.float32)
  targets = rng.integers(0, 2, (6, 4)).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  ref = -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p), -1)
  np.testing.assert_allclose(losses.attribute_loss(
      jnp.asarray(logits), jnp.asarray(targets)), ref, rtol=1e-5)
  with pytest.raises(ValueError, match="must both have shape"):
    losses.attribute_loss(jnp.zeros((6, 4)), jnp.zeros((6, 3)))


def test_dap_scores_by_hand():
  probs = np.array([[0.9, 0.2]])
  classes = np.array([[1, 0], [1, 1], [0, 0]], np.float32)
  # log p(a = a^z | x) summed over attributes.
  expected = np.array([[np.log(.9) + np.log(.8), np.log(.9) + np.log(.2),
                        np.log(.1) + np.log(.8)]])
  np.testing.assert_allclose(zs.dap_scores(probs, classes), expected,
                             rtol=1e-5)
  # Dividing by the attribute priors p(a_m = a^z_m) (Lampert et al.).
  priors = np.array([0.5, 0.25])
  prior_term = np.array([np.log(.5) + np.log(.75), np.log(.5) + np.log(.25),
                         np.log(.5) + np.log(.75)])
  np.testing.assert_allclose(zs.dap_scores(probs, classes, priors=priors),
                             expected - prior_term[None], rtol=1e-5)
  # By hand: 0.653, 0.365, -1.545 -> class 0.
  assert int(np.argmax(zs.dap_scores(probs, classes, priors=priors))) == 0
  with pytest.raises(ValueError, match="must agree in M"):
    zs.dap_scores(probs, classes[:, :1])
  with pytest.raises(ValueError, match="priors must have shape"):
    zs.dap_scores(probs, classes, priors=np.ones(3) / 2)


def test_seven_segment_descriptions():
  a, names = zs.class_attributes("segments")
  assert a.shape == (10, 7) and len(names) == 7
  # The number of lit segments on a seven-segment display, digit by digit.
  np.testing.assert_array_equal(a.sum(1), [6, 2, 5, 5, 4, 5, 6, 3, 7, 6])
  np.testing.assert_array_equal(a[8], np.ones(7))
  np.testing.assert_array_equal(a[1], [0, 1, 1, 0, 0, 0, 0])
  assert len({tuple(r) for r in a}) == 10  # every digit distinct
  b, names = zs.class_attributes("segments+loop")
  assert names[-1] == "closed_loop"
  np.testing.assert_array_equal(np.flatnonzero(b[:, -1]), [0, 6, 8, 9])
  with pytest.raises(ValueError, match="are for the 10 digits"):
    zs.class_attributes("segments", num_classes=5)
  with pytest.raises(ValueError, match="unknown class descriptions"):
    zs.class_attributes("colours")


def test_own_descriptions_from_npz(tmp_path):
  path = tmp_path / "attrs.npz"
  np.savez(path, attributes=np.eye(4), names=np.array(["w", "x", "y", "z"]))
  a, names = zs.class_attributes(f"npz:{path}", num_classes=4)
  np.testing.assert_array_equal(a, np.eye(4))
  assert names == ("w", "x", "y", "z")
  with pytest.raises(ValueError, match=r"shape \(5, M\)"):
    zs.class_attributes(f"npz:{path}", num_classes=5)
  np.savez(tmp_path / "nan.npz", attributes=np.full((4, 2), np.nan))
  with pytest.raises(ValueError, match="NaN"):
    zs.class_attributes(f"npz:{tmp_path}/nan.npz", num_classes=4)
  with pytest.raises(FileNotFoundError, match="no class-description file"):
    zs.class_attributes(f"npz:{tmp_path}/missing.npz", num_classes=4)


def test_check_split_refuses_unusable_splits():
  a, names = zs.class_attributes("segments")
  rest = lambda u: [c for c in range(10) if c not in u]  # noqa: E731
  zs.check_split(a, rest([3, 6, 9]), [3, 6, 9], names)
  with pytest.raises(ValueError, match="overlap"):
    zs.check_split(a, [0, 1, 3], [3, 6], names)
  # Only digit 2 lacks segment c: with 2 unseen, c is constant on the seen.
  with pytest.raises(ValueError, match="c_lower_right"):
    zs.check_split(a, rest([2, 4, 9]), [2, 4, 9], names)
  dup = np.array([[0, 1], [1, 0], [1, 1], [1, 1]], np.float32)
  with pytest.raises(ValueError, match="same description"):
    zs.check_split(dup, [0, 1], [2, 3])
  with pytest.raises(ValueError, match="at least two"):
    zs.check_split(a, rest([5]), [5], names)
  seen, unseen = zs.random_split(a, 3, seed=4, names=names)
  assert len(unseen) == 3 and sorted(seen + unseen) == list(range(10))
  zs.check_split(a, seen, unseen, names)


def test_embedder_scores_are_inner_products_of_both_embeddings():
  model = zs.ZeroShotEmbedder(models.MLP((6,)), dim=4)
  params = models.init_params(model, (5,), 0, *zs.example_inputs(model, 3))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5)).astype(np.float32)
  a = rng.integers(0, 2, (4, 3)).astype(np.float32)
  p = jax.tree.map(np.asarray, params)
  h = np.maximum(x @ p["backbone"]["layer_0"]["kernel"]
                 + p["backbone"]["layer_0"]["bias"], 0)
  fx = h @ p["head"]["kernel"] + p["head"]["bias"]
  ga = a @ p["class_encoder"]["out"]["kernel"] + p["class_encoder"]["out"][
      "bias"]
  np.testing.assert_allclose(model.apply({"params": params}, x, a),
                             fx @ ga.T, rtol=1e-5, atol=1e-5)
  assert sorted(params) == ["backbone", "class_encoder", "head"]


def _synthetic(seed, num_classes=16, num_attributes=8, n_per_class=40):
  """Random binary class attributes, and inputs generated from them:
  x = A[y] W + noise, so each attribute is a linear function of x."""
  rng = np.random.default_rng(seed)
  while True:
    a = rng.integers(0, 2, (num_classes, num_attributes)).astype(np.float32)
    if len({tuple(r) for r in a}) == num_classes:
      break
  w = rng.normal(size=(num_attributes, 24))
  y = np.repeat(np.arange(num_classes), n_per_class)
  x = (a[y] @ w + 0.3 * rng.normal(size=(len(y), 24))).astype(np.float32)
  return a, x, y.astype(np.int32)


@pytest.mark.parametrize("method", ["dap", "embedding"])
def test_unseen_classes_recognised_on_synthetic_data(method):
  a, x, y = _synthetic(0)
  unseen = [1, 5, 9, 13]
  seen = [c for c in range(16) if c not in unseen]
  zs.check_split(a, seen, unseen)
  keep = np.isin(y, seen)
  lut = np.full(16, -1)
  lut[seen] = np.arange(len(seen))
  arrays = {"x": x[keep], "y": lut[y[keep]].astype(np.int32)}
  # A linear f (and g): the attributes are a linear function of x here.
  # Unit-norm embeddings: unnormalised, the hinge is met by growing the
  # scale and training stops early (measured: 0.74 unseen accuracy vs 1.0).
  model = zs.build_model(method, {"name": "mlp", "features": ()}, (24,),
                         num_attributes=8, dim=8, normalize=True)
  params = models.init_params(model, (24,), 0, *zs.example_inputs(model, 8))
  tx = optax.adam(3e-3)
  trainer = trainer_lib.Trainer(zs.make_step(model, tx, method=method), tx,
                                scan=True)
  state, _ = trainer.train_from(
      params, arrays, batch_size=32, num_steps=400, seed=0,
      rng=jax.random.key(0), extra={"class_attributes": a[seen]})
  out = zs.evaluate(method, model, state.params, class_attributes=a,
                    seen=seen, unseen=unseen, unseen_x=x[~keep],
                    unseen_y=y[~keep], seen_x=x[keep], seen_y=y[keep],
                    priors=a[seen].mean(0))
  # Chance is 1/4; the linear attribute structure carries over to the
  # unseen classes.
  assert out["unseen_accuracy"] > 0.8, out
  assert out["seen_accuracy"] > 0.9, out
  assert out["unseen_confusion"].sum() == (~keep).sum()
  np.testing.assert_allclose(np.trace(out["unseen_confusion"]) / (~keep).sum(),
                             out["unseen_accuracy"])
