r"""Which transfer strategy at which label budget? Measured; see the config.

  python experiments/transfer_report.py --workdir=/tmp/tljax/report \
      [--config.target=mnist1d:sheared] [--config=experiments/configs/transfer_report.py:quick]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.drivers import transfer_report  # noqa: E402
from tljax.drivers import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(transfer_report.train_and_evaluate, __file__, default_workdir="/tmp/tljax/transfer_report")
