"""Smoke tests of experiments/zero_shot.py, progressive.py and
self_taught.py: each quick config end to end through train_and_evaluate,
results.json and plots, and one clear error per binary on bad input."""

import json
import os
import sys

import numpy as np
import pytest

from tljax.drivers import progressive
from tljax.drivers import self_taught
from tljax.drivers import zero_shot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import progressive as progressive_config  # noqa: E402
from configs import self_taught as self_taught_config  # noqa: E402
from configs import zero_shot as zero_shot_config  # noqa: E402


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _summary_ok(s, runs):
  assert len(s["runs"]) == runs
  assert 0.0 <= s["mean"] <= 1.0
  np.testing.assert_allclose(s["mean"], np.mean(s["runs"]), rtol=1e-6)


def test_zero_shot_quick(tmp_path):
  config = zero_shot_config.get_config("quick")
  m = zero_shot.train_and_evaluate(config, str(tmp_path))
  r = _results(tmp_path)["metrics"]
  assert r["chance_accuracy"] == pytest.approx(1 / 3)
  assert len(r["splits"]) == config.num_seeds
  for method in ("dap", "embedding"):
    _summary_ok(r[f"{method}_unseen_accuracy"], config.num_seeds)
  assert r["unseen_accuracy"] == m["unseen_accuracy"]
  assert os.path.exists(tmp_path / "unseen_accuracy.png")
  assert os.path.exists(tmp_path / "metrics_dap_run0.jsonl")
  # A split nothing can learn: one clear error naming the attribute.
  with config.unlocked():
    config.unseen_classes = (2, 4, 9)
  with pytest.raises(ValueError, match="c_lower_right"):
    zero_shot.train_and_evaluate(config, str(tmp_path / "bad"))


def test_progressive_quick(tmp_path):
  config = progressive_config.get_config("quick")
  m = progressive.train_and_evaluate(config, str(tmp_path))
  r = _results(tmp_path)["metrics"]
  for name in config.strategies:
    _summary_ok(r["accuracy"][name]["2"], config.num_seeds)
  assert r["earlier_columns_unchanged"] is True
  assert r["source_accuracy_after"] == r["source_accuracy"]
  assert m["target_accuracy"] == r["accuracy"]["progressive"]["2"]["mean"]
  assert os.path.exists(tmp_path / "accuracy.png")
  with config.unlocked():
    config.strategies = ("progressive", "distillation")
  with pytest.raises(ValueError, match="unknown strategies"):
    progressive.train_and_evaluate(config, str(tmp_path / "bad"))


def test_self_taught_quick(tmp_path):
  config = self_taught_config.get_config("quick")
  m = self_taught.train_and_evaluate(config, str(tmp_path))
  r = _results(tmp_path)["metrics"]
  for name in config.strategies:
    _summary_ok(r["accuracy"][name]["2"], config.num_seeds)
  for feats in self_taught.FEATURES:
    assert -1.0 <= r["clustering"][feats]["ari"]["mean"] <= 1.0
    assert 0.0 <= r["clustering"][feats]["nmi"]["mean"] <= 1.0
  assert m["ari"] == r["clustering"]["self_taught"]["ari"]["mean"]
  assert r["unlabelled_examples"] == 300
  assert os.path.exists(tmp_path / "self_taught.png")
  with config.unlocked():
    config.unlabelled = ("digits:clean",)
  with pytest.raises(ValueError, match="encoder reads one input shape"):
    self_taught.train_and_evaluate(config, str(tmp_path / "bad"))
