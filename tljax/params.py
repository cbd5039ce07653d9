"""Parameter trees: leaf names, regex rule trees, loading and tree distances.

Every per-parameter behaviour in tljax (freezing, learning-rate multipliers,
which layers to copy from a source model) is an ordered list of
``(regex, value)`` rules over ``/``-joined leaf names, as in big_vision:

  >>> params = {'backbone': {'layer_0': {'kernel': 1.}}, 'head': {'bias': 2.}}
  >>> make_mask(params, [('backbone/.*', True), ('.*', False)])
  {'backbone': {'layer_0': {'kernel': True}}, 'head': {'bias': False}}

The first rule whose regex matches the whole name wins. A leaf that no rule
covers, or a rule that covers no leaf, is an error that names them: a typo in
a regex must never silently freeze nothing.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any
Rules = Sequence[tuple[str, Any]]


def _key_name(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def leaf_names(tree: PyTree) -> list[str]:
  """``/``-joined names of the leaves of ``tree``, in ``jax.tree`` order."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return ["/".join(_key_name(k) for k in path) for path, _ in leaves]


def tree_map_with_names(fn, tree: PyTree) -> PyTree:
  """Like ``jax.tree.map`` but ``fn(name, leaf)`` also gets the leaf's name."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: fn("/".join(_key_name(k) for k in path), x), tree)


def _raise_problems(what: str, problems, suffix: str = ""):
  """One ValueError listing every ``(found, message)`` whose ``found`` is
  non-empty, so that one call reports all that is wrong."""
  found = [msg for bad, msg in problems if bad]
  if found:
    raise ValueError(f"{what}: " + "; ".join(found) + suffix)


def match_rules(names: Iterable[str], rules: Rules, *,
                what: str = "rules") -> dict[str, tuple[int, Any]]:
  """Maps each name to ``(rule index, value)`` of the first matching rule.

  Raises:
    ValueError: if a rule is malformed, a name matches no rule, or a rule
      matches no name.
  """
  names = list(names)
  compiled = []
  for i, rule in enumerate(rules):
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2
            and isinstance(rule[0], str)):
      raise ValueError(f"{what}: rule {i} is {rule!r}; every rule must be a "
                       "(regex, value) pair, e.g. ('backbone/.*', None).")
    try:
      compiled.append((re.compile(rule[0]), rule[1]))
    except re.error as e:
      raise ValueError(f"{what}: rule {i} regex {rule[0]!r} is not a valid "
                       f"regular expression: {e}") from None
  out, used, uncovered = {}, set(), []
  for name in names:
    for i, (rx, value) in enumerate(compiled):
      if rx.fullmatch(name):
        out[name] = (i, value)
        used.add(i)
        break
    else:
      uncovered.append(name)
  unused = [rules[i][0] for i in range(len(rules)) if i not in used]
  _raise_problems(what, [
      (uncovered, f"no rule covers the parameters {uncovered}; add a rule "
       "for them, or end the list with a catch-all ('.*', ...)"),
      (unused, f"the regexes {unused} match no parameter (first match wins, "
       "so an earlier rule may shadow them)")],
                  f". Parameter names are: {names}")
  return out


def make_tree(params: PyTree, rules: Rules, *, what: str = "rules"
              ) -> PyTree:
  """A tree shaped like ``params`` holding the value of each leaf's rule."""
  matched = match_rules(leaf_names(params), rules, what=what)
  return tree_map_with_names(lambda n, _: matched[n][1], params)


def describe_rules(params: PyTree, rules: Rules, *, what: str = "rules"
                   ) -> str:
  """One line per leaf: its name, the rule that matched it and the value."""
  names = leaf_names(params)
  matched = match_rules(names, rules, what=what)
  width = max(len(n) for n in names)
  return "\n".join(f"  {n:<{width}}  <- {rules[i][0]!r}: {v!r}"
                   for n in names for i, v in [matched[n]])


def make_mask(params: PyTree, rules: Rules, *, what: str = "mask") -> PyTree:
  """Bool tree from ``(regex, bool)`` rules; see the module docstring."""
  tree = make_tree(params, rules, what=what)
  for v in jax.tree.leaves(tree):
    if not isinstance(v, (bool, np.bool_)):
      raise ValueError(f"{what}: rule values must be True or False, got {v!r}")
  return tree


def select_mask(params: PyTree, patterns: Sequence[str] | str) -> PyTree:
  """True where the leaf name fully matches any of ``patterns``.

  Unlike :func:`make_mask`, leaves outside the patterns are simply False; but
  a pattern that matches no leaf still raises, since it is almost surely a
  typo.
  """
  if isinstance(patterns, str):
    patterns = (patterns,)
  names = leaf_names(params)
  for p in patterns:
    if not any(re.fullmatch(p, n) for n in names):
      raise ValueError(f"pattern {p!r} matches no parameter. Parameter names "
                       f"are: {names}")
  return tree_map_with_names(
      lambda n, _: any(re.fullmatch(p, n) for p in patterns), params)


def _flat(tree: PyTree) -> dict[str, Any]:
  tree = flax.core.unfreeze(tree) if isinstance(
      tree, flax.core.FrozenDict) else tree
  return dict(zip(leaf_names(tree), jax.tree.leaves(tree)))


def merge_params(loaded: PyTree, init: PyTree,
                 dont_load: Sequence[str] = ()) -> PyTree:
  """Takes every leaf of ``init`` from ``loaded`` unless named in ``dont_load``.

  This is how a source model is loaded into a target model (big_vision's
  ``load(init_params, path, dont_load=...)``): names must agree, shapes must
  agree, and every disagreement not excused by a ``dont_load`` regex raises
  one error listing all of them.

  Args:
    loaded: parameters of the source model (e.g. restored from a checkpoint).
    init: freshly initialised parameters of the target model.
    dont_load: regexes of target leaves to keep from ``init`` (e.g.
      ``('head/.*',)`` for a new classifier head).

  Returns:
    A tree with the structure of ``init``.

  Raises:
    ValueError: on a leaf of ``init`` missing from ``loaded``, a shape
      mismatch, a ``dont_load`` regex matching nothing, or leaves of
      ``loaded`` that the target does not use.
  """
  if isinstance(dont_load, str):
    dont_load = (dont_load,)
  lflat, iflat = _flat(loaded), _flat(init)
  skip = lambda n: any(re.fullmatch(p, n) for p in dont_load)  # noqa: E731
  unused_patterns = [p for p in dont_load
                     if not any(re.fullmatch(p, n) for n in iflat)]
  missing = [n for n in iflat if not skip(n) and n not in lflat]
  shape = [f"{n}: source {np.shape(lflat[n])} vs target {np.shape(iflat[n])}"
           for n in iflat if not skip(n) and n in lflat
           and np.shape(lflat[n]) != np.shape(iflat[n])]
  unexpected = [n for n in lflat if n not in iflat and not skip(n)]
  _raise_problems("merge_params", [
      (unused_patterns, f"dont_load patterns {unused_patterns} match no "
       "target parameter"),
      (missing, f"target parameters {missing} are not in the source; add "
       "them to dont_load to keep their fresh initialisation"),
      (shape, "shape mismatch for " + "; ".join(shape) + " (add them to "
       "dont_load to re-initialise)"),
      (unexpected, f"source parameters {unexpected} have no place in the "
       "target model; add them to dont_load to drop them")], ".")

  def take(n, x):
    if skip(n):
      return x
    if isinstance(x, jax.Array):
      return jnp.asarray(lflat[n], dtype=x.dtype)
    return np.asarray(lflat[n], dtype=np.asarray(x).dtype)

  return tree_map_with_names(take, init)


def tree_sq_distance(a: PyTree, b: PyTree, mask: PyTree | None = None):
  """Sum of squared differences ``||a - b||^2`` over (masked) leaves."""
  d = optax.tree.sub(a, b)
  if mask is not None:
    d = jax.tree.map(lambda x, m: x * m, d, mask)
  return optax.tree.vdot(d, d)


def tree_sq_norm(a: PyTree, mask: PyTree | None = None):
  """Sum of squares ``||a||^2`` over (masked) leaves."""
  if mask is not None:
    a = jax.tree.map(lambda x, m: x * m, a, mask)
  return optax.tree.vdot(a, a)


def count_params(tree: PyTree) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))
