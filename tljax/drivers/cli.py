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

from tljax import workdir as workdir_lib
from tljax.train import preemption

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
  """Starts multi-host if asked, runs the experiment holding its workdir,
  reports bad input as one line (exit 2) and preemption as one line (exit
  128 + the signal: SIGTERM 143, Ctrl-C 130)."""
  initialize_from_flags()
  if not flags.FLAGS["verbosity"].present:
    # orbax logs every save at INFO; our progress lines go to stdout.
    logging.set_verbosity(logging.WARNING)
  try:
    with workdir_lib.hold(workdir):
      return train_and_evaluate(config, workdir)
  except preemption.Preempted as e:
    print(f"{e}.", file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except USER_ERRORS as e:
    print(f"error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr,
          flush=True)
    sys.exit(2)


def _one_line(e: Exception) -> str:
  """The message of an error without the tracebacks some libraries embed
  in it (absl's flag errors, ml_collections' config loading)."""
  text = str(e).strip()
  if "Traceback (most recent call last)" in text:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    text = lines[-1] if lines else text
  return " ".join(text.split())[:2000]


def _bad_override(e: Exception):
  # ml_collections reports an unknown --config.<field> or a value of the
  # wrong type this way; the message names the field.
  print(f"error: bad --config override: {type(e).__name__}: {_one_line(e)}."
        " The config file lists the fields and their types (--helpfull "
        "shows them).", file=sys.stderr)
  sys.exit(2)


HELP_FLAGS = ("--help", "--helpfull", "--helpshort", "-?", "-h")


def config_fields(config, prefix: str = "config.") -> list[str]:
  """``--config.<field>: <default>`` lines for every field of a config."""
  out = []
  for k, v in config.items():
    if hasattr(v, "items"):
      out += config_fields(v, f"{prefix}{k}.")
    else:
      out.append(f"  --{prefix}{k}: {v!r}")
  return out


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

  def _help(argv):
    # absl's own help flags exit with status 1 before the config is read;
    # --help / --helpfull here print the flags and the config's fields, and
    # exit 0.
    args = [a for a in argv if a.split("=")[0] not in HELP_FLAGS]
    if not any(a.startswith("--workdir") for a in args):
      args.append("--workdir=unused")
    flags.FLAGS(args)
    app.usage(shorthelp=False, writeto_stdout=True)
    print("\nConfig fields (override any with --config.<field>=<value>):\n"
          + "\n".join(config_fields(config.value)))
    sys.exit(0)

  def _parse(argv):
    try:
      if any(a.split("=")[0] in HELP_FLAGS for a in argv[1:]):
        _help(argv)
      return flags.FLAGS(argv)
    except flags.Error as e:
      print(f"error: {_one_line(e)}\nRun with --helpfull for the flags and "
            "the config fields.", file=sys.stderr)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      _bad_override(e)
    sys.exit(2)

  app.run(_main, flags_parser=_parse)
