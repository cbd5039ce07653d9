r"""Metric learning: triplet or Siamese (contrastive) embeddings, evaluated
by recall@k and verification AUC on held-out classes; see the config.

  python experiments/metric.py --workdir=/tmp/tljax/triplet \
      --config=experiments/configs/metric.py:triplet
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.drivers import metric  # noqa: E402
from tljax.drivers import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(metric.train_and_evaluate, __file__)
