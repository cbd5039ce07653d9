"""Two processes on this machine, 2 CPU devices each, train one model over a
global 4-device mesh; the result matches one process on the whole batch."""

import os
import socket
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np

WORKER = textwrap.dedent("""
    import functools, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    from tljax.drivers import cli
    cli.initialize(sys.argv[1], 2, int(sys.argv[2]))
    import numpy as np
    sys.path.insert(0, sys.argv[4])
    import test_multihost as t
    state, step, data = t.setup()
    from tljax import data as data_lib
    from tljax import workdir
    from tljax.train import parallel, trainer
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    c = parallel.compile_step(step, "auto", donate=False)
    assert c.mode == "mesh"
    s = c.put_state(state)
    it = data_lib.batches(data, 8, seed=0)  # this process's half
    for _ in range(3):
      s, m = c(s, c.put_batch(next(it)), jax.random.key(0))
    flat = [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(s.params)]
    # A lean run (a sweep's) over the same global batches, stacked.
    lean, _ = trainer.Trainer(step).run(state, data, batch_size=8,
                                        num_steps=3, seed=0,
                                        rng=jax.random.key(0))
    flat += [np.asarray(jax.device_get(x))
             for x in jax.tree.leaves(lean.params)]
    if workdir.is_chief():
      np.savez(sys.argv[3], *flat)
    workdir.say("multihost ok")
""")


def setup():
  from tljax import models, optim  # noqa: E401
  from tljax.methods import supervised
  from tljax.train import state as state_lib
  model = models.Classifier(backbone=models.MLP(features=(8,)), num_classes=3)
  params = model.init(jax.random.key(0), np.zeros((1, 4), np.float32))[
      "params"]
  tx = optim.make_optimizer(params, name="sgd", learning_rate=0.1)
  step = supervised.make_step(model, tx)
  rng = np.random.default_rng(0)
  data = {"x": rng.normal(size=(32, 4)).astype(np.float32),
          "y": rng.integers(0, 3, 32).astype(np.int32)}
  return state_lib.create_train_state(params, tx), step, data


def test_two_processes_match_one(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  out = str(tmp_path / "params.npz")
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(
      [sys.executable, "-c", WORKER, f"127.0.0.1:{port}", str(i), out, here],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
      for i in range(2)]
  outs = [p.communicate(timeout=240) for p in procs]
  for p, (so, se) in zip(procs, outs):
    assert p.returncode == 0, se[-3000:]
  assert "multihost ok" in outs[0][0] and "multihost ok" not in outs[1][0]

  from tljax import data as data_lib
  state, step, data = setup()
  jitted = jax.jit(step)
  it = data_lib.batches(data, 8, seed=0, process_index=0, process_count=1)
  for _ in range(3):
    state, _ = jitted(state, next(it), jax.random.key(0))
  with np.load(out) as f:
    got = [f[f"arr_{i}"] for i in range(len(f.files))]
  want = jax.tree.leaves(state.params)
  # The step-by-step run and the lean (stacked) run, each against one
  # process on the whole batch.
  chex.assert_trees_all_close(got, want + want, atol=1e-6)
