r"""Zero-shot learning on held-out digits (DAP and a joint embedding).

  python experiments/zero_shot.py --workdir=/tmp/tljax/zsl \
      [--config=experiments/configs/zero_shot.py] \
      [--config.unseen_classes=(3,6,9)] [--config.data=mnist1d:clean]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.drivers import zero_shot  # noqa: E402
from tljax.drivers import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(zero_shot.train_and_evaluate, __file__)
