r"""Which transfer strategy at which label budget? Measured; see the config.

  python experiments/transfer_report.py --workdir=/tmp/tljax/report \
      [--config.target=mnist1d:sheared] [--config.quick=True]
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.methods import transfer_report  # noqa: E402
from tljax.train import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs",
                           "transfer_report.py"),
    "Experiment configuration.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/tljax/transfer_report",
                               "Where results go.")


def main(argv):
  del argv
  cli.run_experiment(transfer_report.train_and_evaluate, _CONFIG.value,
                     _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
