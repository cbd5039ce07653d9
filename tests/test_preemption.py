"""Preemption: the real SIGTERM / SIGINT sent to a running binary saves a
checkpoint at the current step, says so in one line and exits 128 + signal;
started again, the run resumes there and ends as an uninterrupted run does.
A second run on a busy workdir is one clear error."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import numpy as np
import pytest

from tljax import workdir as workdir_lib
from tljax.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "experiments", "train.py")
# A small MLP on mnist1d: thousands of steps in seconds, so a signal lands
# mid-run. checkpoint_every=0: the only checkpoint before the end is the one
# the signal makes.
ARGS = [f"--config={ROOT}/experiments/configs/train.py:quick",
        "--config.model.name=mlp", "--config.num_steps=1000",
        "--config.log_every=50", "--config.eval_every=0",
        "--config.checkpoint_every=0", "--config.optim.schedule=constant"]


def _start(workdir, *extra):
  return subprocess.Popen([sys.executable, TRAIN, f"--workdir={workdir}",
                           *ARGS, *extra], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait_for_progress(proc, min_step=100, timeout=240):
  """Reads progress lines until the run is past ``min_step``."""
  t0 = time.time()
  for line in proc.stdout:
    if line.startswith("[train] step "):
      if int(line.split()[2].split("/")[0]) >= min_step:
        return
    assert time.time() - t0 < timeout, "the run made no progress"
  raise AssertionError(f"the run ended early: {proc.stderr.read()[-2000:]}")


def _finish(proc, timeout=240):
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143),
                                      (signal.SIGINT, 130)])
def test_signal_saves_at_the_current_step_and_a_restart_resumes(
    tmp_path, sig, code):
  wd = str(tmp_path / "run")
  proc = _start(wd)
  _wait_for_progress(proc)
  proc.send_signal(sig)
  rc, _, err = _finish(proc)
  assert rc == code, err[-2000:]
  lines = [l for l in err.strip().splitlines() if l.strip()]
  assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
  name = signal.Signals(sig).name
  assert lines[0].startswith(f"stopped by {name} at step "), lines
  step = int(lines[0].split(" at step ")[1].split(";")[0])
  assert 100 <= step < 1000
  assert os.listdir(os.path.join(wd, "checkpoints")) == [str(step)]
  if sig != signal.SIGTERM:
    return
  # Started again: resumes at that step and ends as an uninterrupted run.
  again = _start(wd)
  rc, out, err = _finish(again)
  assert rc == 0, err[-2000:]
  assert f"resumed from checkpoint at step {step}" in out
  steps = [r["step"] for r in workdir_lib.read_jsonl(
      os.path.join(wd, "metrics.jsonl")) if r["split"] == "train"]
  assert steps == sorted(set(steps)) and steps[-1] == 1000  # no repeats
  ref = str(tmp_path / "ref")
  rc, _, err = _finish(_start(ref))
  assert rc == 0, err[-2000:]
  chex.assert_trees_all_equal(checkpoint.load_params(wd),
                              checkpoint.load_params(ref))


def test_a_second_run_on_a_busy_workdir_is_one_clear_error(tmp_path):
  wd = str(tmp_path / "run")
  long = "--config.num_steps=100000000"  # runs until killed
  first = _start(wd, long)
  try:
    _wait_for_progress(first, min_step=50)
    rc, _, err = _finish(_start(wd, long))
    assert rc == 2, err[-2000:]
    assert "is in use by process" in err and "Traceback" not in err, err
  finally:
    first.kill()  # SIGKILL: the lock goes with the process
    first.communicate()
  # The dead process's lock does not block the next run.
  third = _start(wd, long)
  try:
    _wait_for_progress(third, min_step=50)
  finally:
    third.kill()
    third.communicate()


def test_rerun_with_another_config_is_refused_and_the_same_one_reports(
    tmp_path):
  wd = str(tmp_path / "run")
  base = [sys.executable, TRAIN, f"--workdir={wd}",
          f"--config={ROOT}/experiments/configs/train.py:quick",
          "--config.model.name=mlp", "--config.num_steps=4",
          "--config.log_every=2"]
  out = subprocess.run(base, capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
  assert out.returncode == 0, out.stderr[-2000:]
  with open(os.path.join(wd, "results.json")) as f:
    first = json.load(f)["metrics"]
  bad = subprocess.run(base + ["--config.seed=7",
                               "--config.optim.learning_rate=0.5"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  assert "seed: 0 there, 7 now" in bad.stderr
  assert "optim.learning_rate: 0.001 there, 0.5 now" in bad.stderr
  same = subprocess.run(base + ["--config.log_every=1"], capture_output=True,
                        text=True, timeout=300, cwd=ROOT)
  assert same.returncode == 0, same.stderr[-2000:]
  assert "already holds a finished run" in same.stdout
  with open(os.path.join(wd, "results.json")) as f:
    text = f.read()
  again = json.loads(text)["metrics"]
  assert "NaN" not in text
  for k in ("final_loss", "source_accuracy", "target_accuracy"):
    np.testing.assert_allclose(again[k], first[k])
