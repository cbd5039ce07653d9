r"""Metric learning: triplet or Siamese (contrastive) embeddings, evaluated
by recall@k and verification AUC on held-out classes; see the config.

  python experiments/metric.py --workdir=/tmp/tljax/triplet \
      --config=experiments/configs/metric.py:triplet
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.methods import metric_learning  # noqa: E402
from tljax.train import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "metric.py"),
    "Experiment configuration.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results go.",
                               required=True)


def main(argv):
  del argv
  cli.run_experiment(metric_learning.train_and_evaluate, _CONFIG.value,
                     _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
