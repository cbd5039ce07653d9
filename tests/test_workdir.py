"""The workdir: one owner at a time, the config it was made with, records
trimmed on resume, strict JSON."""

import json
import subprocess
import sys
import textwrap

import pytest

from tljax import workdir as workdir_lib

HOLDER = textwrap.dedent("""
    import sys, time
    from tljax import workdir
    with workdir.hold(sys.argv[1]):
      print("holding", flush=True)
      time.sleep(60)
""")


def test_hold_is_exclusive_across_processes_and_released_by_kill(tmp_path):
  wd = str(tmp_path / "run")
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, wd],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "holding"
    with pytest.raises(ValueError, match=r"is in use by process \d+ on"):
      with workdir_lib.hold(wd):
        pass
  finally:
    holder.kill()  # SIGKILL: no clean-up code runs in the holder
    holder.wait()
    holder.stdout.close()
  # The kernel dropped the dead process's lock: the next run owns the dir.
  with workdir_lib.hold(wd):
    with workdir_lib.hold(wd):  # re-entrant within one process
      pass


def test_hold_refuses_a_file_or_an_unwritable_directory(tmp_path):
  f = tmp_path / "afile"
  f.write_text("x")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    with workdir_lib.hold(str(f)):
      pass
  # sysfs refuses new directories even to root (a read-only filesystem
  # for a workdir's purposes, whoever runs the tests).
  with pytest.raises(ValueError, match="cannot write to workdir"):
    with workdir_lib.hold("/sys/tljax_workdir_test/run"):
      pass


def test_claim_records_the_config_and_names_every_field_that_differs(
    tmp_path):
  wd = str(tmp_path)
  cfg = {"seed": 0, "optim": {"learning_rate": 1e-3}, "log_every": 10,
         "budgets": (1, 5)}
  workdir_lib.claim(wd, cfg)
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["budgets"] == [1, 5]
  workdir_lib.claim(wd, dict(cfg))  # the same config: fine
  workdir_lib.claim(wd, dict(cfg, log_every=99), ignore=("log_every",))
  with pytest.raises(ValueError) as e:
    workdir_lib.claim(wd, dict(cfg, seed=7, optim={"learning_rate": 0.5}))
  msg = str(e.value)
  assert "seed: 0 there, 7 now" in msg
  assert "optim.learning_rate: 0.001 there, 0.5 now" in msg
  assert "new workdir" in msg


def test_claim_treats_an_added_field_as_its_old_value(tmp_path):
  """A workdir recorded before a field existed resumes when the field has
  the value that reproduces the old runs, and only then."""
  wd = str(tmp_path)
  workdir_lib.claim(wd, {"seed": 0, "maml": {"inner_lr": 0.1}})
  added = {"maml.head_init": "learned"}
  workdir_lib.claim(wd, {"seed": 0, "maml": {"inner_lr": 0.1,
                                             "head_init": "learned"}},
                    added=added)
  with pytest.raises(ValueError, match="maml.head_init: 'learned' there, "
                     "'proto' now"):
    workdir_lib.claim(wd, {"seed": 0, "maml": {"inner_lr": 0.1,
                                               "head_init": "proto"}},
                      added=added)
  with pytest.raises(ValueError, match="'<missing>' there"):
    workdir_lib.claim(wd, {"seed": 0, "maml": {"inner_lr": 0.1,
                                               "head_init": "learned"}})


def test_trim_jsonl_drops_records_after_the_resumed_step(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  for s in (2, 4, 6):
    workdir_lib.append_jsonl(path, {"step": s, "split": "train", "loss": 1.0})
  workdir_lib.trim_jsonl(path, 4)
  assert [r["step"] for r in workdir_lib.read_jsonl(path)] == [2, 4]


def test_to_json_and_write_results_are_strict(tmp_path):
  assert workdir_lib.to_json({"a": (1.0, float("-inf")), "b": {"c": 2}}) == {
      "a": [1.0, None], "b": {"c": 2}}
  path = workdir_lib.write_results(str(tmp_path), {"ok": 0.5})
  with open(path) as f:
    assert "non_finite" not in json.load(f)
