"""What the drivers share: sweeps that resume at the first unfinished cell
(also after a real SIGTERM), config validation, the batch-size note."""

import os
import signal

import ml_collections
import numpy as np
import pytest

from tljax import data as data_lib
from tljax import workdir as workdir_lib
from tljax.drivers import common
from tljax.train import preemption

CONFIG = ml_collections.ConfigDict({"seed": 0, "data_dir": "",
                                    "num_seeds": 2})


def _sweep(workdir, calls, stop_after=None):
  def run(name, ds, seed):
    calls.append((name, len(ds), seed))
    if stop_after is not None and len(calls) == stop_after:
      os.kill(os.getpid(), signal.SIGTERM)  # the real signal, mid-sweep
    # A deterministic "accuracy" of the cell.
    return float(np.mean(ds.y == (seed % 2))) + 0.01 * len(name)
  return common.run_sweep(CONFIG, "moons", ["a", "bb"], [3, 0], [0, 1], run,
                          workdir=workdir)


def test_a_stopped_sweep_resumes_at_the_first_unfinished_cell(tmp_path):
  ref, _, _ = _sweep(None, [])
  calls = []
  wd = str(tmp_path / "sweep")
  with pytest.raises(preemption.Preempted) as e:
    _sweep(wd, calls, stop_after=3)
  assert e.value.exit_code == 143 and "cells.jsonl" in str(e.value)
  assert len(calls) == 3  # the cell under way finished, then it stopped
  assert len(workdir_lib.read_jsonl(os.path.join(wd, "cells.jsonl"))) == 3
  again = []
  results, _, cells = _sweep(wd, again)
  assert len(again) == 8 - 3  # only the unfinished cells run
  assert results == ref
  assert len(cells) == 8
  with pytest.raises(ValueError, match="seed: 0 there, 5 now"):
    common.run_sweep(ml_collections.ConfigDict(dict(CONFIG, seed=5)), "moons",
                     ["a"], [3], [0], lambda *a: 0.0, workdir=wd)


@pytest.mark.parametrize("field,value,msg", [
    ("num_steps", 0, "num_steps must be a positive integer"),
    ("batch_size", -4, "batch_size must be a positive integer"),
    ("target_steps", 0, "target_steps must be a positive"),
    ("learning_rate", -1e-3, "learning_rate must be > 0"),
    ("num_seeds", 0, "num_seeds must be >= 1")])
def test_validate_names_the_bad_field(field, value, msg):
  cfg = {"num_steps": 10, "batch_size": 8, "warmup_steps": 0,
         "maml": {"inner_steps": 0}, "optim": {"learning_rate": 1e-3}}
  common.validate(cfg)  # zero warm-up and zero inner steps are fine
  if field == "learning_rate":
    cfg["optim"]["learning_rate"] = value
  else:
    cfg[field] = value
  with pytest.raises(ValueError, match=msg):
    common.validate(cfg)


def test_batches_from_says_when_the_batch_is_larger_than_the_data(capsys):
  arrays = {"x": np.zeros((10, 2), np.float32)}
  it = common.batches_from(ml_collections.ConfigDict(
      {"seed": 0, "batch_size": 64}), arrays)(0)
  assert next(it)["x"].shape == (64, 2)
  assert "batch_size 64 is larger than the 10 training examples" in \
      capsys.readouterr().out
  common.batches_from(ml_collections.ConfigDict(
      {"seed": 0, "batch_size": 5}), arrays)
  assert capsys.readouterr().out == ""
  with pytest.raises(ValueError, match="batch_size must be a positive"):
    next(data_lib.batches(arrays, 0))
