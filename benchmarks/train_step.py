r"""Training-step speed: tljax's compiled step against the same model in PyTorch.

  python -m pip install -e ".[bench]"
  python benchmarks/train_step.py [--steps=200] [--out=benchmarks/results]
  python benchmarks/train_step.py --overhead   # the step's own overhead

Both sides train the same CNN1D (3 stride-2 convs of 32 channels, kernel 5,
dense 128, 10-way head; mnist1d-shaped input of length 40) and the same MLP
with Adam on the same batches, in one process, one after the other. Reported:
steps/s, the tljax/PyTorch ratio, and achieved FLOP/s as a fraction of this
machine's peak. The FLOPs of one step are XLA's cost analysis of the
compiled tljax step (forward, backward and Adam), used for both sides.
Peak FP32 FLOP/s is cores x clock x FLOPs/cycle (64 with two AVX-512 FMA
units, 32 with AVX2), with the clock read from /proc/cpuinfo; a large
matmul's achieved rate is printed beside it as a practical ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def cpu_peak_flops() -> tuple[float, str]:
  cores = os.cpu_count() or 1
  mhz, flags = 0.0, ""
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("cpu MHz") and not mhz:
        mhz = float(line.split(":")[1])
      if line.startswith("flags") and not flags:
        flags = line
  per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 8
  peak = cores * mhz * 1e6 * per_cycle
  return peak, (f"{cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} FP32 "
                "FLOP/cycle")


def matmul_rate(n=2048, reps=10) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(reps):
    out = f(a)
  out.block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - t)


def jax_side(kind: str, batch: int, steps: int):
  import optax  # pylint: disable=g-import-not-at-top
  from tljax import models  # pylint: disable=g-import-not-at-top
  from tljax.methods import supervised  # pylint: disable=g-import-not-at-top
  from tljax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  backbone = (models.CNN1D() if kind == "cnn1d"
              else models.MLP(features=(256, 256)))
  model = models.Classifier(backbone=backbone, num_classes=10)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch, 40)).astype(np.float32)
  y = rng.integers(0, 10, batch).astype(np.int32)
  params = model.init(jax.random.key(0), x[:1])["params"]
  tx = optax.adam(1e-3)
  state = state_lib.create_train_state(params, tx)
  step = jax.jit(supervised.make_step(model, tx), donate_argnums=(0,))
  b = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
  key = jax.random.key(0)
  flops = step.lower(state, b, key).compile().cost_analysis()
  flops = flops[0] if isinstance(flops, (list, tuple)) else flops
  flops = float(flops.get("flops", 0.0))
  for _ in range(5):
    state, m = step(state, b, key)
  jax.block_until_ready(state)
  t = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, b, key)
  jax.block_until_ready(state)
  return steps / (time.perf_counter() - t), flops, float(m["loss"])


def torch_side(kind: str, batch: int, steps: int):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  if kind == "cnn1d":
    # padding=2 with stride 2 gives Flax's "SAME" lengths (40 -> 20 -> 10 -> 5).
    net = nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, 32, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv1d(32, 32, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv1d(32, 32, 5, stride=2, padding=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(160, 128), nn.ReLU(), nn.Linear(128, 10))
  else:
    net = nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256),
                        nn.ReLU(), nn.Linear(256, 10))
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.normal(size=(batch, 40)).astype(np.float32))
  y = torch.from_numpy(rng.integers(0, 10, batch).astype(np.int64))
  lossf = nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = lossf(net(x), y)
    loss.backward()
    opt.step()
    return loss

  # PyTorch's intra-op threads can lose badly to their own spin-waiting on
  # small ops; time both 1 thread and all cores and keep the faster, so the
  # peer gets its best setting.
  best = (0.0, None, 0)
  for threads in sorted({1, os.cpu_count() or 1}):
    torch.set_num_threads(threads)
    for _ in range(5):
      step()
    t = time.perf_counter()
    for _ in range(steps):
      loss = step()
    rate = steps / (time.perf_counter() - t)
    if rate > best[0]:
      best = (rate, float(loss.detach()), threads)
  return best


def _fusions(fn, *args) -> int:
  """Fusions (XLA:CPU kernels) of ``fn`` compiled on ``args``."""
  import re  # pylint: disable=g-import-not-at-top
  text = jax.jit(fn).lower(*args).compile().as_text()
  return len(re.findall(r"^\s*\S+ = \S+ fusion\(", text, re.M))


def _interleaved(calls: dict, repeats: int) -> dict:
  """Min and median seconds of each zero-argument call, wall clock and
  this process's CPU time (what a shared core's time slicing does not
  inflate), the calls alternating within each repeat so that they see the
  same machine load."""
  times = {k: ([], []) for k in calls}
  for _ in range(repeats):
    for k, call in calls.items():
      t, c = time.perf_counter(), time.process_time()
      call()
      times[k][0].append(time.perf_counter() - t)
      times[k][1].append(time.process_time() - c)
  return {k: (min(w), float(np.median(w)), min(c), float(np.median(c)))
          for k, (w, c) in times.items()}


def overhead(repeats: int, steps: int, out: str):
  """The step's own overhead on small models (issue 14, item 7).

  1. One DANN step with an MLP (32, 32) on two moons, 128 + 128 (speed.py's
     row): ``train_step`` as it is (loss, the loss's metrics and the three
     l2 norms), with ``norms=False``, and a bare step written out here
     (value_and_grad, Adam, the loss alone); XLA:CPU fusions and ms/step
     over ``steps`` jitted calls.
  2. A lean run (``Trainer.run``, ``scan=True``, 100 steps of 64 from 4000
     examples of 40 features, an MLP (32, 32)): ms/step when the trainer
     draws the batches itself, against the same 100 steps pre-stacked and
     already on the device (``run_stacked``'s program alone).
  Run it on another checkout (PYTHONPATH=<old tree>) for the "before".
  """
  import functools  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  import tljax  # pylint: disable=g-import-not-at-top
  from tljax import models  # pylint: disable=g-import-not-at-top
  from tljax.methods import domain_adaptation as da  # pylint: disable=g-import-not-at-top
  from tljax.methods import supervised  # pylint: disable=g-import-not-at-top
  from tljax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from tljax.train import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  print(f"tljax from {os.path.dirname(tljax.__file__)}")
  b = 128
  x, y = datasets.make_moons(b, noise=0.1, random_state=0)
  xt, _ = datasets.make_moons(b, noise=0.1, random_state=1)
  model = models.Classifier(models.MLP((32, 32)), num_classes=2)
  disc = da.discriminator((64, 64))
  params = da.add_discriminator(models.init_params(model, (2,), 0), model,
                                disc, (2,), seed=1)
  tx = optax.adam(1e-3)
  kw = dict(alignment_name="dann", discriminator=disc, total_steps=1000)
  batch = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.int32),
           "x_target": jnp.asarray(xt, jnp.float32)}
  key = jax.random.key(0)
  step = da.make_step(model, tx, **kw)

  def bare(state, batch, rng):
    def objective(p):
      return da.adaptation_loss(p, state, batch,
                                jax.random.fold_in(rng, state.step),
                                model=model, **kw)
    (loss, _), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, opt_state=opt_state,
                         params=optax.apply_updates(state.params,
                                                    updates)), {"loss": loss}
  variants = {"train_step": step, "bare step": bare}
  try:
    state0 = state_lib.create_train_state(params, tx)
    jax.eval_shape(functools.partial(step, norms=False), state0, batch, key)
    variants["train_step norms=False"] = functools.partial(step, norms=False)
  except TypeError:
    pass  # a checkout without the norms option
  rows, calls, holders = [], {}, {}
  for name, fn in variants.items():
    state = state_lib.create_train_state(jax.tree.map(jnp.copy, params), tx)
    n_fusions = _fusions(fn, state, batch, key)
    prog = jax.jit(fn, donate_argnums=(0,))
    holders[name] = prog(state, batch, key)[0]
    rows.append({"what": f"DANN MLP step, {name}", "fusions": n_fusions})

    def call(name=name, prog=prog):
      s = holders[name]
      for _ in range(steps):
        s, _ = prog(s, batch, key)
      jax.block_until_ready(s)
      holders[name] = s
    calls[name] = call
  for r, (tmin, tmed, cmin, cmed) in zip(rows, _interleaved(
      calls, repeats).values()):
    r.update(ms_min=1e3 * tmin / steps, ms_median=1e3 * tmed / steps,
             cpu_ms_min=1e3 * cmin / steps, cpu_ms_median=1e3 * cmed / steps)

  rng = np.random.default_rng(0)
  arrays = {"x": rng.normal(size=(4000, 40)).astype(np.float32),
            "y": rng.integers(0, 10, 4000).astype(np.int32)}
  clf = models.Classifier(models.MLP((32, 32)), num_classes=10)
  p0 = models.init_params(clf, (40,), 0)
  trainer = trainer_lib.Trainer(supervised.make_step(clf, tx), tx,
                                parallel="single", scan=True)
  n = 100
  stacked = trainer.compiled.put_batches(trainer_lib.stack_batches(
      arrays, 64, n, seed=0))
  jax.block_until_ready(stacked)
  c = trainer.compiled

  def lean(seed=[0]):  # a new seed each call: nothing cached across calls
    seed[0] += 1
    s, _ = trainer.train_from(p0, arrays, batch_size=64, num_steps=n,
                              seed=seed[0], rng=key)
    jax.block_until_ready(s)

  def prestacked():
    s, m = c.run(c.put_state(trainer.init_state(p0)), stacked, key,
                 scan=True)
    jax.block_until_ready((s, m))
  lean()
  prestacked()
  t = _interleaved({"lean": lean, "pre": prestacked}, repeats)
  for what, (tmin, tmed, cmin, cmed) in (
      ("lean run, 100 steps (Trainer.train_from, scan)", t["lean"]),
      ("same 100 steps pre-stacked on the device", t["pre"])):
    rows.append({"what": what, "ms_min": 1e3 * tmin / n,
                 "ms_median": 1e3 * tmed / n, "cpu_ms_min": 1e3 * cmin / n,
                 "cpu_ms_median": 1e3 * cmed / n})
  load = os.getloadavg()[0]
  print(f"load average (1 min) at the end: {load:.1f}")
  print("| what | XLA fusions | ms/step, median (min) | CPU ms/step, median "
        "(min) |\n|---|---|---|---|")
  for r in rows:
    print(f"| {r['what']} | {r.get('fusions', '')} | "
          f"{r['ms_median']:.3f} ({r['ms_min']:.3f}) | "
          f"{r['cpu_ms_median']:.3f} ({r['cpu_ms_min']:.3f}) |")
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "train_step_overhead.json"), "w") as f:
    json.dump({"load_average": load, "tljax": os.path.dirname(tljax.__file__),
               "rows": rows}, f, indent=2)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                               "results"))
  p.add_argument("--overhead", action="store_true",
                 help="only the step's own overhead (issue 14, item 7)")
  p.add_argument("--repeats", type=int, default=15)
  args = p.parse_args()
  if args.overhead:
    overhead(args.repeats, args.steps, args.out)
    return
  import torch  # pylint: disable=g-import-not-at-top
  peak, how = cpu_peak_flops()
  mm = matmul_rate()
  print(f"machine: {platform.processor() or platform.machine()}, "
        f"{jax.devices()[0].device_kind}; jax {jax.__version__}, torch "
        f"{torch.__version__}")
  print(f"peak FP32: {peak / 1e9:.1f} GFLOP/s ({how}); 2048^2 matmul in "
        f"XLA: {mm / 1e9:.1f} GFLOP/s")
  rows = []
  for kind in ("cnn1d", "mlp"):
    for batch in (64, 512):
      js, flops, _ = jax_side(kind, batch, args.steps)
      ts, _, threads = torch_side(kind, batch, args.steps)
      rows.append(dict(model=kind, batch=batch, tljax_steps_s=js,
                       torch_steps_s=ts, torch_threads=threads,
                       ratio=js / ts,
                       step_mflop=flops / 1e6,
                       tljax_gflops=js * flops / 1e9,
                       tljax_frac_peak=js * flops / peak,
                       torch_frac_peak=ts * flops / peak))
  load = os.getloadavg()[0]
  print(f"load average during the run: {load:.1f} (1 min)")
  hdr = ("| model | batch | tljax steps/s | PyTorch steps/s (threads) | "
         "tljax/PyTorch | MFLOP/step | tljax GFLOP/s | tljax % peak | "
         "PyTorch % peak |")
  print(hdr)
  print("|" + "---|" * 9)
  for r in rows:
    print(f"| {r['model']} | {r['batch']} | {r['tljax_steps_s']:.0f} | "
          f"{r['torch_steps_s']:.0f} ({r['torch_threads']}) | {r['ratio']:.2f} | "
          f"{r['step_mflop']:.1f} | {r['tljax_gflops']:.2f} | "
          f"{100 * r['tljax_frac_peak']:.2f}% | "
          f"{100 * r['torch_frac_peak']:.2f}% |")
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "train_step.json"), "w") as f:
    json.dump({"load_average": load, "peak_flops": peak, "peak_how": how, "matmul_flops": mm,
               "device": str(jax.devices()[0]), "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
