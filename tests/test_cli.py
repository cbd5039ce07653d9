"""The binaries' answers to bad input: one line on stderr, exit status 2,
no traceback, before any long work; --helpfull lists the config's fields.
(The data, config and loss checks behind them are tested where they live:
test_data, test_common, test_optim, test_workdir, test_metric_losses.)"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(binary, *args, timeout=300):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", f"{binary}.py"),
       *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("binary,args,message", [
    ("train", ["--workdir={tmp}/afile"], "is a file, not a directory"),
    ("train", ["--workdir=/sys/tljax_cli_test"], "cannot write to workdir"),
    ("adapt", ["--workdir={tmp}/w",
               "--config=experiments/configs/adapt.py:moonz"],
     "unknown config argument(s) ['moonz']"),
    ("train", ["--workdir={tmp}/w", "--config.batch_size=0"],
     "batch_size must be a positive integer"),
    ("train", ["--workdir={tmp}/w", "--config.num_steps=0"],
     "num_steps must be a positive integer"),
    ("train", ["--workdir={tmp}/w", "--config.optim.learning_rate=-0.1"],
     "learning_rate must be > 0"),
    ("adapt", ["--workdir={tmp}/w", "--config.source=moons:inf"],
     "needs an angle in degrees, a finite number"),
    ("transfer_report", ["--workdir={tmp}/w",
                         "--config=experiments/configs/transfer_report.py:"
                         "candidates,quick",
                         "--config.candidates=('ckpt:{tmp}/none', 'random')"],
     "candidate 'ckpt:"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, binary, args, message):
  (tmp_path / "afile").write_text("not a directory")
  out = _run(binary, *[a.format(tmp=tmp_path) for a in args])
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  assert message in lines[0] and lines[0].startswith("error: "), lines
  assert len(lines) <= 2, lines  # the error, and at most a hint
  assert "steps/s" not in out.stdout  # nothing trained


def test_helpfull_lists_the_config_fields_and_exits_0():
  out = _run("adapt", "--config=experiments/configs/adapt.py:moons",
             "--helpfull")
  assert out.returncode == 0, out.stderr[-2000:]
  assert "--workdir" in out.stdout and "multihost" in out.stdout
  assert "  --config.source: 'moons'" in out.stdout
  assert "  --config.optim.learning_rate: 0.001" in out.stdout
