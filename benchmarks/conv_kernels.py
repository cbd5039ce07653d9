r"""Where the conv DANN step's time goes: each convolution of tljax's CNN2D
(28x28x1 -> 32 -> pool -> 64) at the DANN batch, forward, gradient in the
input and gradient in the kernel, timed alone (issue 14, item 3).

  python benchmarks/conv_kernels.py [--batch=256] [--threads=1]

Three implementations of the same convolution (3x3, SAME, NHWC for XLA,
NCHW for torch) on the same inputs:

- ``lax``: ``jax.lax.conv_general_dilated`` (XLA:CPU's convolution, Eigen);
- ``im2col``: :func:`im2col_conv` below (9 strided slices concatenated,
  then one matmul; its gradients are matmuls and slice transposes), which
  CNN2D used until this benchmark showed it slower than XLA's own
  convolution for every pass the DANN step needs;
- ``tljax``: :func:`tljax.ops.conv`, what CNN2D runs: lax's forward and
  input gradient, the kernel gradient as one matmul per kernel offset;
- ``torch``: ``torch.nn.functional.conv2d`` and its autograd (oneDNN).

Each value is checked against the lax result before timing (relative
1e-4). GFLOP/s counts 2 * B * H * W * Cin * Cout * 9 for every pass (the
two gradients have the forward's FLOPs). ``--threads`` sets both sides:
XLA through ``--xla_cpu_multi_thread_eigen`` (1 thread: false) and torch's
``set_num_threads``; the 2048^2 matmul of the same threads is the peak
reference. Prints a markdown table and writes JSON beside speed.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time


def _parse():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=256,
                 help="images per call (DANN at 128+128 = 256)")
  p.add_argument("--threads", type=int, default=0,
                 help="1: one thread on each side; 0: all cores")
  p.add_argument("--repeats", type=int, default=15)
  p.add_argument("--out", default=os.path.join(os.path.dirname(
      os.path.abspath(__file__)), "results", "conv_kernels.json"))
  return p.parse_args()


ARGS = _parse()
if ARGS.threads == 1:   # before jax starts its thread pool
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_multi_thread_eigen=false").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from tljax import ops  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")
# (height = width, input channels, output channels) of CNN2D's two convs.
LAYERS = ((28, 1, 32), (14, 32, 64))


def im2col_conv(lhs, rhs, window_strides, padding, dimension_numbers=None):
  """A stride-1/strided, undilated NHWC x HWIO convolution as im2col: one
  strided slice of the padded input per kernel offset, concatenated on the
  channel axis, times the reshaped kernel."""
  assert tuple(dimension_numbers) == DN, dimension_numbers
  kernel, strides = rhs.shape[:-2], tuple(window_strides)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:-1], kernel, strides,
                                      padding)
  x = jnp.pad(lhs, [(0, 0), *[tuple(p) for p in padding], (0, 0)])
  out = [(x.shape[1 + i] - k) // s + 1
         for i, (k, s) in enumerate(zip(kernel, strides))]
  cols = []
  for offset in itertools.product(*(range(k) for k in kernel)):
    limit = (x.shape[0], *(o + (n - 1) * s + 1
                           for o, n, s in zip(offset, out, strides)),
             x.shape[-1])
    cols.append(jax.lax.slice(x, (0, *offset, 0), limit, (1, *strides, 1)))
  return jnp.concatenate(cols, axis=-1) @ rhs.reshape(-1, rhs.shape[-1])


def _time(call, repeats):
  call()
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    call()
    ts.append(time.perf_counter() - t)
  return statistics.median(ts), min(ts)


def _passes(conv, x, k, g):
  """Jitted forward, input-gradient and kernel-gradient calls of ``conv``,
  the gradients pulled back from the cotangent ``g`` (NHWC)."""
  f = lambda x, k: conv(x, k, (1, 1), "SAME", dimension_numbers=DN)  # noqa
  fwd = jax.jit(f)
  dx = jax.jit(lambda x, k: jax.vjp(lambda x: f(x, k), x)[1](g)[0])
  dk = jax.jit(lambda x, k: jax.vjp(lambda k: f(x, k), k)[1](g)[0])
  return {"forward": fwd, "grad input": dx, "grad kernel": dk}


def main():
  import torch  # pylint: disable=g-import-not-at-top
  threads = ARGS.threads or os.cpu_count()
  torch.set_num_threads(threads)
  b = ARGS.batch
  a = jnp.ones((2048, 2048), jnp.float32)
  mm = jax.jit(lambda a: a @ a)
  t_mm, _ = _time(lambda: mm(a).block_until_ready(), 5)
  peak = 2 * 2048 ** 3 / t_mm
  ta = torch.ones(2048, 2048)
  t_tmm, _ = _time(lambda: ta @ ta, 5)
  print(f"{os.cpu_count()} CPU cores, {threads} thread(s) each side; jax "
        f"{jax.__version__}, torch {torch.__version__}; 2048^2 matmul GFLOP/s:"
        f" jnp {peak / 1e9:.1f}, torch {2 * 2048 ** 3 / t_tmm / 1e9:.1f}; "
        f"load average {os.getloadavg()[0]:.1f}")
  print("| conv (B, H=W, Cin -> Cout) | pass | lax ms | im2col ms | tljax ms "
        "| torch ms | lax GFLOP/s | tljax GFLOP/s | torch GFLOP/s | "
        "tljax / torch |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  rows = []
  rng = np.random.default_rng(0)
  for h, cin, cout in LAYERS:
    x = rng.standard_normal((b, h, h, cin), np.float32)
    k = rng.standard_normal((3, 3, cin, cout), np.float32) * 0.1
    flops = 2.0 * b * h * h * cin * cout * 9
    # A random cotangent, the same on both sides (a constant of ones lets
    # XLA simplify the gradients).
    g = rng.standard_normal((b, h, h, cout), np.float32)
    jx, jk, jg = jnp.asarray(x), jnp.asarray(k), jnp.asarray(g)
    impls = {"lax": _passes(jax.lax.conv_general_dilated, jx, jk, jg),
             "im2col": _passes(im2col_conv, jx, jk, jg),
             "tljax": _passes(ops.conv, jx, jk, jg)}
    tx = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    tk = torch.tensor(k.transpose(3, 2, 0, 1).copy(), requires_grad=True)
    tout = torch.nn.functional.conv2d(tx, tk, padding=1)
    tg = torch.tensor(g.transpose(0, 3, 1, 2).copy())

    def torch_pass(name):
      if name == "forward":
        def call():
          with torch.no_grad():
            return torch.nn.functional.conv2d(tx, tk, padding=1)
        return call
      wrt = tx if name == "grad input" else tk
      # The one backward kernel: autograd on a kept graph.
      return lambda: torch.autograd.grad(tout, wrt, tg, retain_graph=True)[0]

    for name in ("forward", "grad input", "grad kernel"):
      want = np.asarray(impls["lax"][name](jx, jk))
      tval = torch_pass(name)().detach().numpy()
      tval = (tval.transpose(0, 2, 3, 1) if name != "grad kernel"
              else tval.transpose(2, 3, 1, 0))
      for what, v in (("im2col", np.asarray(impls["im2col"][name](jx, jk))),
                      ("tljax", np.asarray(impls["tljax"][name](jx, jk))),
                      ("torch", tval)):
        err = np.abs(v - want).max() / np.abs(want).max()
        if err > 1e-4:
          raise SystemExit(f"check failed: {what} {name} differs from lax "
                           f"by {err:.2e} (layer {h}x{h}x{cin}->{cout})")
      times = {impl: _time(lambda f=impls[impl][name]: f(
          jx, jk).block_until_ready(), ARGS.repeats) for impl in impls}
      times["torch"] = _time(torch_pass(name), ARGS.repeats)
      row = {"layer": f"{b}, {h}, {cin} -> {cout}", "pass": name,
             "flops": flops, "lax_ms": times["lax"][0] * 1e3,
             "im2col_ms": times["im2col"][0] * 1e3,
             "tljax_ms": times["tljax"][0] * 1e3,
             "torch_ms": times["torch"][0] * 1e3}
      row["tljax_over_torch"] = row["tljax_ms"] / row["torch_ms"]
      rows.append(row)
      print(f"| {row['layer']} | {name} | {row['lax_ms']:.2f} | "
            f"{row['im2col_ms']:.2f} | {row['tljax_ms']:.2f} | "
            f"{row['torch_ms']:.2f} | "
            f"{flops / row['lax_ms'] / 1e6:.1f} | "
            f"{flops / row['tljax_ms'] / 1e6:.1f} | "
            f"{flops / row['torch_ms'] / 1e6:.1f} | "
            f"{row['tljax_over_torch']:.2f} |", flush=True)
  # The DANN step needs no input gradient of the first layer (the images).
  used = [r for r in rows if not (r["layer"].endswith(
      f", {LAYERS[0][1]} -> {LAYERS[0][2]}") and r["pass"] == "grad input")]
  tot = {impl: sum(r[f"{impl}_ms"] for r in used) for impl in
         ("lax", "im2col", "tljax", "torch")}
  print(f"| the passes a training step runs | sum | {tot['lax']:.2f} | "
        f"{tot['im2col']:.2f} | {tot['tljax']:.2f} | {tot['torch']:.2f} | "
        f"| | | {tot['tljax'] / tot['torch']:.2f} |")
  os.makedirs(os.path.dirname(ARGS.out), exist_ok=True)
  with open(ARGS.out, "w") as f:
    json.dump({"command": "python benchmarks/conv_kernels.py "
                          f"--batch={b} --threads={ARGS.threads}",
               "threads": threads, "jnp_matmul_flops": peak,
               "load_average": os.getloadavg(), "rows": rows,
               "totals_ms": tot}, f, indent=1)
  print(f"wrote {ARGS.out}")


if __name__ == "__main__":
  main()
