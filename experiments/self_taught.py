r"""Self-taught learning: autoencoder features from unlabelled data, reused
on a labelled target with few labels; clustering of the features.

  python experiments/self_taught.py --workdir=/tmp/tljax/self_taught \
      [--config=experiments/configs/self_taught.py]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.drivers import self_taught  # noqa: E402
from tljax.drivers import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(self_taught.train_and_evaluate, __file__)
