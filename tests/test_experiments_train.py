"""Smoke tests of experiments/train.py: source run, transfer run, npz, CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tljax.drivers import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import train as train_config  # noqa: E402


def _quick(**overrides):
  config = train_config.get_config("quick")
  config.num_steps = 6
  config.checkpoint_every = 3
  config.eval_every = 3
  config.log_every = 3
  config.update(overrides)
  return config


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_source_then_target_transfer(tmp_path):
  src, tgt = str(tmp_path / "src"), str(tmp_path / "tgt")
  m = train.train_and_evaluate(_quick(), src)
  assert {"source_accuracy", "target_accuracy"} <= set(m)
  assert _results(src)["metrics"]["source_accuracy"] == m["source_accuracy"]
  assert os.path.isdir(os.path.join(src, "params"))
  assert os.path.getsize(os.path.join(src, "training_curves.png")) > 1000
  m2 = train.train_and_evaluate(
      _quick(train_on="target", init_from=src, labels_per_class=2), tgt)
  assert m2["train_examples"] == 20
  # Wrong dont_load: the error names the pattern.
  with pytest.raises(ValueError, match="match no target parameter"):
    train.train_and_evaluate(
        _quick(train_on="target", init_from=src, dont_load=("heads/.*",)),
        str(tmp_path / "bad"))


def test_users_own_npz_files(tmp_path):
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(80, 5)).astype(np.float32)
  ys = (xs[:, 0] > 0).astype(np.int64)
  xt = xs + 1.0
  np.savez(tmp_path / "src.npz", x=xs, y=ys)
  np.savez(tmp_path / "tgt.npz", x=xt, y=ys)
  config = _quick(source=f"npz:{tmp_path}/src.npz",
                  target=f"npz:{tmp_path}/tgt.npz", batch_size=8)
  m = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert 0.0 <= m["target_accuracy"] <= 1.0
  m = train.train_and_evaluate(
      _quick(source=config.source, target=config.target, batch_size=8,
             train_on="target", init_from=str(tmp_path / "run")),
      str(tmp_path / "run2"))
  assert m["train_examples"] == 64


def test_binary_runs_and_reports_bad_input_cleanly(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "train.py"),
         f"--workdir={tmp_path}/cli",
         f"--config={ROOT}/experiments/configs/train.py:quick",
         "--config.num_steps=4", "--config.log_every=2"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "steps/s" in out.stdout and "target_accuracy" in out.stdout
  bad = subprocess.run(cmd + ["--config.target=mnist1d:blurry"],
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2
  assert "unknown mnist1d preset 'blurry'" in bad.stderr
  assert "Traceback" not in bad.stderr
  typo = subprocess.run(cmd[:2] + ["--workdir=x", "--config.num_stesp=3"],
                        capture_output=True, text=True, timeout=300)
  assert typo.returncode == 2 and "num_stesp" in typo.stderr
  assert "Traceback" not in typo.stderr
