"""Rule trees, merge_params and tree distances against hand-written trees."""

from absl.testing import parameterized
import chex
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import params as P

TREE = {
    "backbone": {
        "layer_0": {"kernel": np.ones((2, 3)), "bias": np.zeros(3)},
        "layer_1": {"kernel": np.ones((3, 3)), "bias": np.zeros(3)},
        "layer_2": {"kernel": np.ones((3, 4)), "bias": np.zeros(4)},
    },
    "head": {"kernel": np.ones((4, 2)), "bias": np.zeros(2)},
}


def _tree(b0, b1, b2, h):
  return {"backbone": {"layer_0": {"kernel": b0, "bias": b0},
                       "layer_1": {"kernel": b1, "bias": b1},
                       "layer_2": {"kernel": b2, "bias": b2}},
          "head": {"kernel": h, "bias": h}}


class MaskTest(parameterized.TestCase):

  def test_leaf_names(self):
    assert P.leaf_names({"b": {"x": 1, "a": 2}, "a": 3}) == ["a", "b/a", "b/x"]

  @parameterized.named_parameters(
      ("first_two_layers", [("backbone/layer_[01]/.*", True), (".*", False)],
       _tree(True, True, False, False)),
      ("last_layer_and_head", [("backbone/layer_2/.*", True),
                               ("head/.*", True), (".*", False)],
       _tree(False, False, True, True)),
      ("first_match_wins", [("backbone/.*", False), ("backbone/layer_0/.*",
                                                     True), (".*", True)],
       None),
      ("everything", [(".*", True)], _tree(True, True, True, True)),
  )
  def test_make_mask(self, rules, expected):
    if expected is None:  # second rule shadowed: must raise as unused
      with pytest.raises(ValueError, match="match no parameter"):
        P.make_mask(TREE, rules)
      return
    assert P.make_mask(TREE, rules) == expected

  def test_uncovered_leaf_raises_and_names_it(self):
    with pytest.raises(ValueError, match=r"no rule covers.*head/bias"):
      P.make_mask(TREE, [("backbone/.*", True), ("head/kernel", False)])

  def test_unused_rule_raises_and_names_it(self):
    with pytest.raises(ValueError, match=r"'backbone/layer_9/\.\*'.*match no"):
      P.make_mask(TREE, [("backbone/layer_9/.*", True), (".*", False)])

  def test_bad_regex_and_bad_rule(self):
    with pytest.raises(ValueError, match="not a valid regular expression"):
      P.make_mask(TREE, [("backbone/[", True)])
    with pytest.raises(ValueError, match=r"\(regex, value\) pair"):
      P.make_mask(TREE, ["backbone/.*"])
    with pytest.raises(ValueError, match="True or False"):
      P.make_mask(TREE, [(".*", 0.5)])

  def test_regex_must_match_whole_name(self):
    # "layer_0" alone is not a full name: it matches nothing.
    with pytest.raises(ValueError, match="match no parameter"):
      P.make_mask(TREE, [("layer_0", True), (".*", False)])

  def test_make_tree_values(self):
    t = P.make_tree(TREE, [("backbone/.*", 0.1), ("head/.*", None)])
    assert t["backbone"]["layer_1"]["kernel"] == 0.1
    assert t["head"]["bias"] is None

  def test_select_mask(self):
    m = P.select_mask(TREE, ["head/.*"])
    assert m == _tree(False, False, False, True)
    with pytest.raises(ValueError, match="matches no parameter"):
      P.select_mask(TREE, ["heads/.*"])


class MergeTest(parameterized.TestCase):

  def test_loads_all_but_dont_load(self):
    init = {"backbone": {"w": np.zeros(3)}, "head": {"w": np.zeros(2)}}
    loaded = {"backbone": {"w": np.arange(3.)}, "head": {"w": np.ones(5)}}
    out = P.merge_params(loaded, init, dont_load=("head/.*",))
    chex.assert_trees_all_equal(
        out, {"backbone": {"w": jnp.arange(3.)}, "head": {"w": jnp.zeros(2)}})

  @parameterized.named_parameters(
      ("shape_mismatch", {"backbone": {"w": np.zeros(4)}, "head": {"w": 0.}},
       (), r"shape mismatch for backbone/w: source \(4,\) vs target \(3,\)"),
      ("missing_in_source", {"backbone": {"w": np.zeros(3)}}, (),
       r"target parameters \['head/w'\] are not in the source"),
      ("unexpected_in_source", {"backbone": {"w": np.zeros(3)},
                                "head": {"w": 0.}, "disc": {"w": 0.}}, (),
       r"source parameters \['disc/w'\] have no place"),
      ("dont_load_matches_nothing", {"backbone": {"w": np.zeros(3)},
                                     "head": {"w": 0.}}, ("heads/.*",),
       r"dont_load patterns \['heads/\.\*'\] match no target"),
  )
  def test_errors(self, loaded, dont_load, msg):
    init = {"backbone": {"w": np.zeros(3)}, "head": {"w": np.float32(0.)}}
    with pytest.raises(ValueError, match=msg):
      P.merge_params(loaded, init, dont_load=dont_load)

  def test_all_problems_in_one_error(self):
    init = {"a": np.zeros(3), "b": np.zeros(2)}
    with pytest.raises(ValueError) as e:
      P.merge_params({"a": np.zeros(4), "c": np.zeros(1)}, init)
    msg = str(e.value)
    assert "b" in msg and "shape mismatch for a" in msg and "c" in msg


def test_tree_distances_against_numpy():
  a = {"x": np.array([1., 2.]), "y": {"z": np.array([[3.]])}}
  b = {"x": np.array([0., 4.]), "y": {"z": np.array([[1.]])}}
  np.testing.assert_allclose(P.tree_sq_distance(a, b), 1 + 4 + 4)
  np.testing.assert_allclose(
      P.tree_sq_distance(a, b, mask={"x": False, "y": {"z": True}}), 4)
  np.testing.assert_allclose(P.tree_sq_norm(a), 1 + 4 + 9)
  assert P.count_params(a) == 3
