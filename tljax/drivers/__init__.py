"""Experiment drivers: one module per experiment binary.

Each holds ``train_and_evaluate(config, workdir)`` for
``experiments/<name>.py``: it loads data, builds models and steps from the
method modules, runs sweeps, and writes tables, plots and results files.
Drivers are the only layer that prints, plots or writes files (always
through :mod:`tljax.workdir`, from process 0). Import the one you need
(``from tljax.drivers import adapt``).
"""
