"""What every experiment binary shares: multi-host start-up and clean errors.

``--multihost`` calls ``jax.distributed.initialize``.

On a TPU pod or a GPU cluster every host runs the same command with
``--multihost``; JAX finds the coordinator from the environment (TPU
metadata, SLURM, or ``--coordinator_address``/``--num_processes``/
``--process_id``). Each host then feeds its slice of the global batch and
only process 0 prints and writes files (see :mod:`tljax.workdir`).
"""

from __future__ import annotations

import sys
from typing import Callable

from absl import flags
from absl import logging
import jax

_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() first.")
_COORD = flags.DEFINE_string("coordinator_address", None,
                             "host:port of process 0 (if not auto-detected)")
_NPROC = flags.DEFINE_integer("num_processes", None, "number of processes")
_PID = flags.DEFINE_integer("process_id", None, "this process's index")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "Simulate this many CPU devices (testing/laptops).")


def initialize(coordinator_address=None, num_processes=None, process_id=None):
  """``jax.distributed.initialize`` with CPU collectives (gloo) on CPU."""
  if jax.config.jax_platforms in (None, "", "cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)


def initialize_from_flags():
  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  if _MULTIHOST.value:
    initialize(_COORD.value, _NPROC.value, _PID.value)


# Errors that mean "your input or config is wrong": shown as one line, no
# traceback. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, KeyError,
               FloatingPointError)


def run_experiment(train_and_evaluate: Callable, config, workdir: str):
  """Starts multi-host if asked, runs the experiment, reports bad input."""
  initialize_from_flags()
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save at INFO; our progress lines go to stdout.
    logging.set_verbosity(logging.WARNING)
  try:
    return train_and_evaluate(config, workdir)
  except USER_ERRORS as e:
    print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def _bad_override(e: Exception):
  # ml_collections reports an unknown --config.<field> or a value of the
  # wrong type this way; the message names the field.
  print(f"error: bad --config override: {type(e).__name__}: {e}. The config "
        "file lists the fields and their types.", file=sys.stderr)
  sys.exit(2)


def main(train_and_evaluate: Callable, binary_file: str, *,
         config_name: str | None = None, default_workdir: str | None = None):
  """The whole of an experiment binary: flags, then one library call.

  Defines ``--config`` (default ``experiments/configs/<binary name>.py``,
  locked so a typo in an override is an error) and ``--workdir``, then runs
  ``train_and_evaluate(config, workdir)`` through :func:`run_experiment`.

    if __name__ == "__main__":
      cli.main(train.train_and_evaluate, __file__)
  """
  # Imported here: the experiment binaries are the only users of absl.app
  # and ml_collections' flag parsing.
  from absl import app  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top

  here = os.path.dirname(os.path.abspath(binary_file))
  name = config_name or os.path.splitext(os.path.basename(binary_file))[0]
  try:
    # ml_collections applies --config.<field> overrides here already.
    config = config_flags.DEFINE_config_file(
        "config", os.path.join(here, "configs", f"{name}.py"),
        "Experiment configuration (an ml_collections file; its docstring has "
        "the command and the result it gave).", lock_config=True)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _bad_override(e)
  workdir = flags.DEFINE_string(
      "workdir", default_workdir, "Where metrics, checkpoints, results.json "
      "and plots go; started again, the run resumes from it.",
      required=default_workdir is None)

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run_experiment(train_and_evaluate, config.value, workdir.value)

  def _parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      print(f"error: {e}\nRun with --helpfull for the flags.",
            file=sys.stderr)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      _bad_override(e)
    sys.exit(2)

  app.run(_main, flags_parser=_parse)
