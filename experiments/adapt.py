r"""Unsupervised domain adaptation (DANN, MMD, CORAL, KMM, TCA); see the config.

  python experiments/adapt.py --workdir=/tmp/tljax/dann \
      [--config=experiments/configs/adapt.py[:moons|mnist1d|digits][,quick]] \
      [--config.method=dann|mmd|coral|tca|kmm|source_only|target_supervised] \
      [--config.source=npz:src.npz --config.target=npz:tgt.npz]
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.methods import domain_adaptation  # noqa: E402
from tljax.train import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "adapt.py"),
    "Experiment configuration.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results go.",
                               required=True)


def main(argv):
  del argv
  cli.run_experiment(domain_adaptation.train_and_evaluate, _CONFIG.value,
                     _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
