"""Smoke tests of experiments/transfer_report.py (quick config, in process)."""

import json
import os
import sys

import numpy as np
import pytest

from tljax.drivers import transfer_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import transfer_report as report_config  # noqa: E402


def _quick(**overrides):
  config = report_config.get_config("quick")
  config.update(overrides)
  return config


def test_quick_run_writes_table_json_and_plot(tmp_path, capsys):
  workdir = str(tmp_path / "report")
  metrics = transfer_report.train_and_evaluate(_quick(), workdir)
  out = capsys.readouterr().out
  assert "| strategy | 1 | all |" in out and "best" in out
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  m = results["metrics"]
  assert m == json.loads(json.dumps(metrics))
  assert results["config"]["num_seeds"] == 2
  strategies = list(transfer_report.DEFAULT_STRATEGIES) + ["source_only"]
  assert sorted(m["accuracy"]) == sorted(strategies)
  for budget in ("1", "all"):
    means = {}
    for name in strategies:
      r = m["accuracy"][name][budget]
      runs = r["runs"]
      assert len(runs) == (1 if name == "source_only" else 2)
      assert all(0.0 <= a <= 1.0 for a in runs)
      np.testing.assert_allclose(r["mean"], np.mean(runs))
      np.testing.assert_allclose(r["std"], np.std(runs))
      means[name] = r["mean"]
    assert m["best_strategy"][budget] == max(means, key=means.get)
  with open(os.path.join(workdir, "table.md")) as f:
    table = f.read()
  assert all(f"| {name} |" in table for name in strategies)
  with open(os.path.join(workdir, "accuracy_vs_labels.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(os.path.join(workdir, "features"))
  # A second run with the source model of the first (init_from) and the
  # source head as the probe's starting point.
  again = transfer_report.train_and_evaluate(
      _quick(init_from=os.path.join(workdir, "source"),
             strategies=("linear_probe",), budgets=(3,),
             head_from_source=True),
      str(tmp_path / "again"))
  assert set(again["accuracy"]) == {"linear_probe", "source_only"}
  assert "training the source model" not in capsys.readouterr().out


def test_bad_configs_fail_before_training(tmp_path):
  with pytest.raises(ValueError, match="unknown strategies"):
    transfer_report.train_and_evaluate(_quick(strategies=("finetune", "lora")),
                                       str(tmp_path / "a"))
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "src.npz", x=rng.normal(size=(30, 5)),
           y=rng.integers(0, 3, 30))
  np.savez(tmp_path / "tgt.npz", x=rng.normal(size=(30, 6)),
           y=rng.integers(0, 3, 30))
  np.savez(tmp_path / "tgt2.npz", x=rng.normal(size=(30, 5)),
           y=rng.integers(0, 2, 30))
  with pytest.raises(ValueError, match="shape"):
    transfer_report.train_and_evaluate(
        _quick(source=f"npz:{tmp_path}/src.npz",
               target=f"npz:{tmp_path}/tgt.npz"), str(tmp_path / "b"))
  with pytest.raises(ValueError, match="same classes"):
    transfer_report.train_and_evaluate(
        _quick(source=f"npz:{tmp_path}/src.npz",
               target=f"npz:{tmp_path}/tgt2.npz", head_from_source=True),
        str(tmp_path / "c"))
  assert not os.path.exists(tmp_path / "b" / "source")
