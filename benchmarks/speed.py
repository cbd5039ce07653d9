r"""Speed of tljax's compiled steps against their usual peers, in one process.

  python -m pip install -e ".[bench]"
  nice -n 10 python benchmarks/speed.py [--quick] [--out=benchmarks/results/speed.json]

Workloads (each: tljax and its peer on the same inputs; within each repeat
each side runs a block of back-to-back calls of about 50 ms, the first call
of a block untimed, then the other side, so that both see the same machine
load while neither wakes the other's idle worker threads at every call):

- ``triplet``: loss + gradient in the embeddings of ``tljax.losses.
  triplet_loss`` (l2 distance, margin 0.2, d = 128, 8 examples per class:
  32 classes at B = 256, 128 at B = 1024) against pytorch-metric-learning
  (PML) 2.x, ``TripletMarginLoss`` after ``TripletMarginMiner('semihard' /
  'all')`` or ``BatchHardMiner``, ``LpDistance(normalize_embeddings=False)``
  (the embeddings are unit vectors already), PML's default reducer
  (``AvgNonZeroReducer``). B = 4096 runs tljax alone (memory).
- ``maml``: one MAML step (``tljax.methods.maml.make_step``, second order,
  Adam) on 25 sinusoid tasks of ``tljax.data.episodes.SinusoidTasks`` (10
  support and 10 query points, the paper's 1-40-40-1 regressor, inner rate
  0.01, 1 or 5 inner steps) against ``torch.func`` (``functional_call`` +
  ``grad`` + ``vmap``, outer ``grad_and_value``, ``torch.optim.Adam``).
- ``dann``: one DANN step (``tljax.methods.domain_adaptation.make_step``,
  Adam) with ``models.CNN2D`` on 28x28x1 images (source + target batches of
  64 + 64 and 128 + 128) and with an MLP (32, 32) on two moons (128 + 128),
  against the same nets, gradient reversal and loss in PyTorch eager.
- ``resnet``: one ResNet-18 training step (cross-entropy, SGD momentum,
  BatchNorm in training mode), batch 32 at 32x32 and 224x224 (ImageNet
  stem at both), against the same network in PyTorch eager with
  torchvision's names (``tests/torch_reference.py``; torchvision does not
  install beside the pinned torch), its random weights converted by
  ``tljax.models.convert``; the losses at the shared weights are compared.

Before timing, each workload checks that both sides compute the same value
on the same inputs (``CHECK_RTOL``) and stops if they do not:

- triplet, batch all: PML's loss is tljax's definition (the mean over
  triplets with a positive hinge; tljax counts hinges > 1e-16, PML > 0),
  so the two values are compared directly, and the gradients too.
- triplet, semi-hard: the definitions differ. PML averages the hinge over
  *every* semi-hard triplet, ``0 < d(a,n) - d(a,p) < margin``; tljax
  follows FaceNet: for each (anchor, positive) the *nearest* negative
  beyond the positive (the farthest negative if none is), averaged over all
  (anchor, positive) pairs, zero hinges included. Each side is compared
  with a float64 NumPy evaluation of its own definition on the shared
  distance matrix, and the distance matrices with each other.
- triplet, batch hard: the same hardest positive and negative per anchor;
  PML averages the hinges that are > 0, tljax all valid anchors. PML with
  ``MeanReducer`` is compared with tljax directly (its timed run keeps the
  default reducer), and each side with its float64 definition.
- maml and dann: the peer gets tljax's initial weights; the meta-loss and
  meta-gradient (maml) and the step's loss (dann) are compared.

Reported per workload: median and min time over the repeats (at least 5,
3 with ``--quick``; fast steps repeat for 4 s, up to 300 times), the ratio
tljax / peer of the medians, tljax's GFLOP/s from XLA's cost analysis of
the compiled program (``jax.jit(...).lower(...).compile().cost_analysis()``;
XLA counts a while loop's body once, so rows whose program loops, the
mining loops and MAML's inner scan, are lower bounds; it adds up both
branches of a conditional, so batch hard's untaken dense tie branch, the
distance matrix's VJP, is subtracted), that rate as a
fraction of a 2048^2 f32 matmul in ``jnp`` measured in the same run (numpy's
and torch's matmul rates are printed for reference), and XLA's temporary
buffer size. PyTorch runs with whichever of 1 thread and all cores was
faster on a probe (on 2 shared cores, 1 thread often wins).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

CHECK_RTOL = 1e-4
MARGIN = 0.2


# ------------------------------------------------------------------ helpers
def _block(x):
  return jax.block_until_ready(x)


def _compiled(fn, *args):
  """XLA's FLOPs and temporary bytes of ``jax.jit(fn)`` on ``args``."""
  compiled = jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  return float(cost.get("flops", 0.0)), int(mem.temp_size_in_bytes)


def _stats(ts):
  return {"median_s": statistics.median(ts), "min_s": min(ts), "n": len(ts)}


def _torch_threads(peer_call, torch):
  """Leaves torch on the faster of 1 thread and all cores for
  ``peer_call`` (best of 3 calls each after a warm-up; 1 call for slow
  ones); returns the thread count."""
  best = None
  for threads in sorted({1, os.cpu_count() or 1}):
    torch.set_num_threads(threads)
    t = time.perf_counter()
    peer_call()
    dts = [time.perf_counter() - t]
    for _ in range(3 if dts[0] < 0.5 else 1):
      t = time.perf_counter()
      peer_call()
      dts.append(time.perf_counter() - t)
    if best is None or min(dts[1:]) < best[0]:
      best = (min(dts[1:]), threads)
  torch.set_num_threads(best[1])
  return best[1]


def _time_pair(tljax_call, peer_call, repeats, budget_s=4.0, most=300,
               block_s=0.05):
  """Alternating blocks, tljax then the peer within each round: at least
  ``repeats`` timed calls each, more (up to ``most``) while they fit in
  ``budget_s`` seconds, so that medians of millisecond steps rest on many
  samples. A block repeats a call for about ``block_s`` seconds and does
  not time its first call: right after the other side's call, that side's
  idle worker threads still spin on the cores (OpenMP's and Eigen's wait
  policies), which made millisecond steps look up to 2x slower when the
  two sides alternated call by call."""
  def one(call):
    t = time.perf_counter()
    call()
    return time.perf_counter() - t

  sides = [(tljax_call, [])] + ([(peer_call, [])] if peer_call else [])
  for call, _ in sides:
    call()    # compiles / warms up
  sizes = [max(1, min(50, int(block_s / max(one(c), 1e-6)))) for c, _ in
           sides]
  start = time.perf_counter()
  while len(sides[0][1]) < most and (
      min(len(ts) for _, ts in sides) < repeats or
      time.perf_counter() - start < budget_s):
    for (call, ts), size in zip(sides, sizes):
      if size > 1:
        call()    # settles the other side's threads; not timed
      ts.extend(one(call) for _ in range(size))
  tj = _stats(sides[0][1])
  return tj, (_stats(sides[1][1]) if peer_call else None)


def _close(a, b, what, rtol=CHECK_RTOL, atol=1e-7):
  a, b = float(a), float(b)
  if not abs(a - b) <= atol + rtol * abs(b):
    raise SystemExit(f"check failed, {what}: {a!r} vs {b!r}")
  return abs(a - b) / max(abs(b), 1e-30)


def _rel_err(got, want):
  """The largest absolute difference over the largest entry of ``want``."""
  got, want = np.asarray(got), np.asarray(want)
  return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def matmul_rates(n=2048, reps=10):
  """f32 ``n x n`` matmul rates (FLOP/s): jnp (XLA), numpy, torch."""
  import torch  # pylint: disable=g-import-not-at-top
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  _block(f(a))
  best = []
  for _ in range(3):
    t = time.perf_counter()
    for _ in range(reps):
      out = f(a)
    _block(out)
    best.append(time.perf_counter() - t)
  rates = {"jnp": 2 * n**3 * reps / min(best)}
  x = np.ones((n, n), np.float32)
  x @ x
  t = time.perf_counter()
  for _ in range(3):
    x @ x
  rates["numpy"] = 2 * n**3 * 3 / (time.perf_counter() - t)
  xt = torch.ones((n, n))
  xt @ xt
  t = time.perf_counter()
  for _ in range(3):
    xt @ xt
  rates["torch"] = 2 * n**3 * 3 / (time.perf_counter() - t)
  return rates


# ------------------------------------------------------------------ triplet
def _triplet_inputs(b, dim=128, per_class=8, seed=0):
  rng = np.random.default_rng(seed)
  labels = (np.arange(b) // per_class).astype(np.int64)
  centers = rng.normal(size=(b // per_class, dim))
  x = 0.35 * centers[labels] + rng.normal(size=(b, dim))
  emb = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  return emb, labels


def _slot_reference(d, labels, margin, mining):
  """float64 NumPy values of tljax's and PML's definitions on ``d``, one
  anchor-positive slot at a time (no (B, B, B) array)."""
  same = labels[:, None] == labels[None, :]
  pos = same & ~np.eye(len(labels), dtype=bool)
  neg = ~same
  out = {}
  if mining == "hard":
    hp = np.where(pos, d, 0.0).max(1)
    hn = np.where(neg, d, np.inf).min(1)
    valid = pos.any(1) & neg.any(1)
    l = np.maximum(hp - hn + margin, 0.0)[valid]
    out["tljax"] = l.mean() if l.size else 0.0
    out["pml"] = l[l > 0].mean() if (l > 0).any() else 0.0
    return out
  tot_all = cnt_all = tot_semi = cnt_semi = tot_fn = 0.0
  far = np.where(neg, d, -np.inf).max(1)
  pairs = np.argwhere(pos)
  for a in np.unique(pairs[:, 0]):
    ps = pairs[pairs[:, 0] == a, 1]
    dn = d[a, neg[a]]
    if dn.size == 0:
      continue
    for p in ps:
      h = d[a, p] - dn + margin
      tot_all += h[h > 0].sum()
      cnt_all += (h > 0).sum()
      semi = (dn > d[a, p]) & (dn < d[a, p] + margin)
      tot_semi += h[semi].sum()
      cnt_semi += semi.sum()
      beyond = dn[dn > d[a, p]]
      chosen = beyond.min() if beyond.size else far[a]
      tot_fn += max(d[a, p] - chosen + margin, 0.0)
  n_pairs = sum(neg[a].any() for a in pairs[:, 0])
  if mining == "all":
    out["tljax"] = out["pml"] = tot_all / max(cnt_all, 1)
  else:
    out["tljax"] = tot_fn / max(n_pairs, 1)
    out["pml"] = tot_semi / max(cnt_semi, 1)
  return out


def triplet_rows(batches, peer_batches, repeats, torch, flops_peak):
  from pytorch_metric_learning import distances  # pylint: disable=g-import-not-at-top
  from pytorch_metric_learning import losses as pml_losses  # pylint: disable=g-import-not-at-top
  from pytorch_metric_learning import miners  # pylint: disable=g-import-not-at-top
  from pytorch_metric_learning import reducers  # pylint: disable=g-import-not-at-top
  from tljax import losses  # pylint: disable=g-import-not-at-top
  from tljax import ops  # pylint: disable=g-import-not-at-top
  from tljax.losses import metric  # pylint: disable=g-import-not-at-top
  rows = []
  for b in batches:
    emb, labels = _triplet_inputs(b)
    e, y = jnp.asarray(emb), jnp.asarray(labels.astype(np.int32))
    d64 = np.asarray(ops.pairwise_distances(e), np.float64)
    for mining in ("semi_hard", "all", "hard"):
      fn = lambda e, y, m=mining: jax.value_and_grad(  # noqa: E731
          lambda e: losses.triplet_loss(e, y, margin=MARGIN, mining=m))(e)
      step = jax.jit(fn)
      flops, temp = _compiled(fn, e, y)
      if mining == "hard":
        # XLA adds up both branches of a conditional; the dense one (ties)
        # is not taken on these inputs, so leave its FLOPs out.
        dense = lambda e, g: jax.vjp(  # noqa: E731
            lambda e: ops.pairwise_distances(e), e)[1](g)
        flops -= _compiled(dense, e, jnp.zeros((b, b), jnp.float32))[0]
      loss, grad = _block(step(e, y))
      row = {"workload": f"triplet {mining}", "batch": b,
             "tljax_temp_mib": temp / 2**20, "flops": flops}
      ref = _slot_reference(d64, labels, MARGIN, mining) if (
          b in peer_batches or b <= 1024) else None
      if ref is not None:
        row["check_tljax_vs_float64"] = _close(loss, ref["tljax"],
                                               "tljax vs its definition")
      peer_call = None
      if b in peer_batches:
        dist = distances.LpDistance(normalize_embeddings=False, p=2, power=1)
        miner = (miners.BatchHardMiner(distance=dist) if mining == "hard"
                 else miners.TripletMarginMiner(
                     margin=MARGIN, distance=dist,
                     type_of_triplets={"semi_hard": "semihard",
                                       "all": "all"}[mining]))
        loss_fn = pml_losses.TripletMarginLoss(margin=MARGIN, distance=dist)
        et = torch.tensor(emb, requires_grad=True)
        yt = torch.tensor(labels)

        def peer(miner=miner, loss_fn=loss_fn, et=et, yt=yt):
          et.grad = None
          l = loss_fn(et, yt, miner(et, yt))
          l.backward()
          return l
        pl = peer()
        dt = dist(et.detach()).numpy()
        row["check_distance_max_abs"] = float(np.abs(dt - d64).max())
        row["check_pml_vs_float64"] = _close(pl.item(), ref["pml"],
                                             "PML vs its definition")
        if mining == "all":
          row["check_tljax_vs_pml"] = _close(loss, pl.item(), "tljax vs PML")
          row["check_grad_max_abs_over_max"] = _rel_err(et.grad.numpy(),
                                                        grad)
        if mining == "hard":
          mean_loss = pml_losses.TripletMarginLoss(
              margin=MARGIN, distance=dist, reducer=reducers.MeanReducer())
          row["check_tljax_vs_pml_mean_reducer"] = _close(
              loss, mean_loss(et, yt, miner(et, yt)).item(),
              "tljax vs PML with MeanReducer")
        row["peer"] = "PML " + ("BatchHardMiner" if mining == "hard" else
                                "TripletMarginMiner")
        row["torch_threads"] = _torch_threads(peer, torch)
        peer_call = peer
      if b <= 1024:
        # The (B, B, B) formulation's buffers, compiled but never run.
        plain = lambda e, y, m=mining: jax.value_and_grad(  # noqa: E731
            lambda e: metric._plain_triplet_loss(e, y, margin=MARGIN,
                                                 mining=m))(e)
        row["plain_temp_mib"] = _compiled(plain, e, y)[1] / 2**20
      tj, tp = _time_pair(lambda: _block(step(e, y)), peer_call, repeats)
      _finish(row, tj, tp, flops_peak)
      rows.append(row)
      print(_line(row), flush=True)
  return rows


# --------------------------------------------------------------------- MAML
def maml_rows(steps_list, repeats, torch, flops_peak):
  import optax  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from torch.func import functional_call, grad, grad_and_value, vmap
  from tljax import models  # pylint: disable=g-import-not-at-top
  from tljax.data import episodes  # pylint: disable=g-import-not-at-top
  from tljax.methods import maml  # pylint: disable=g-import-not-at-top
  from tljax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  rows = []
  model = models.Classifier(models.MLP((40, 40)), num_classes=1)
  params = models.init_params(model, (1,), 0)
  batch = episodes.SinusoidTasks(0).batch(0, 25, 10, 10)
  tasks = {k: jnp.asarray(v) for k, v in episodes.task_arrays(batch).items()}
  tt = {k: torch.tensor(np.asarray(v)) for k, v in tasks.items()}
  net = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(),
                            torch.nn.Linear(40, 40), torch.nn.ReLU(),
                            torch.nn.Linear(40, 1))
  flax_of = {"0": ("backbone", "layer_0"), "2": ("backbone", "layer_1"),
             "4": ("head",)}
  for inner in steps_list:
    kw = dict(kind="regression", inner_lr=0.01, inner_steps=inner,
              first_order=False)
    tx = optax.adam(1e-3)
    step = jax.jit(maml.make_step(model, tx, **kw), donate_argnums=(0,))
    # The timed step donates its state: give it its own copy of params.
    state = state_lib.create_train_state(jax.tree.map(jnp.copy, params), tx)
    key = jax.random.key(0)
    flops, temp = _compiled(maml.make_step(model, tx, **kw), state, tasks, key)
    (want, _), want_g = jax.value_and_grad(maml.maml_loss, has_aux=True)(
        params, state, tasks, key, model=model, **kw)

    # torch.func with tljax's initial weights.
    with torch.no_grad():
      for name, p in net.named_parameters():
        layer, kind = name.split(".")
        leaf = params
        for k in flax_of[layer]:
          leaf = leaf[k]
        w = np.asarray(leaf["kernel" if kind == "weight" else "bias"])
        p.copy_(torch.tensor(w.T.copy() if kind == "weight" else w))
    tparams = dict(net.named_parameters())
    opt = torch.optim.Adam(tparams.values(), lr=1e-3)

    def mse(p, x, y):
      return torch.mean((functional_call(net, p, (x,)) - y) ** 2)

    def query_loss(p, sx, sy, qx, qy, inner=inner):
      for _ in range(inner):
        g = grad(mse)(p, sx, sy)
        p = {k: p[k] - 0.01 * g[k] for k in p}
      return mse(p, qx, qy)

    def meta_loss(p):
      return vmap(query_loss, in_dims=(None, 0, 0, 0, 0))(
          p, tt["support_x"], tt["support_y"], tt["query_x"],
          tt["query_y"]).mean()

    def peer(tparams=tparams, opt=opt, meta_loss=meta_loss):
      g, l = grad_and_value(meta_loss)({k: v.detach() for k, v in
                                        tparams.items()})
      for k, v in tparams.items():
        v.grad = g[k]
      opt.step()
      return l

    g0, l0 = grad_and_value(meta_loss)({k: v.detach() for k, v in
                                        tparams.items()})
    row = {"workload": f"maml {inner} inner step{'s' if inner > 1 else ''}",
           "batch": 25, "flops": flops, "tljax_temp_mib": temp / 2**20,
           "peer": "torch.func"}
    row["check_tljax_vs_peer"] = _close(want, l0.item(), "MAML meta-loss")
    gj = want_g["head"]["kernel"][:, 0]
    gt = g0["4.weight"][0].numpy()
    row["check_grad_max_abs_over_max"] = _rel_err(gj, gt)
    if row["check_grad_max_abs_over_max"] > 1e-3:
      raise SystemExit(f"check failed, MAML meta-gradient: {row}")
    holder = {"state": state}

    def run():
      holder["state"], _ = step(holder["state"], tasks, key)
      _block(holder["state"])
    rows.append(_measure(row, run, peer, repeats, torch, flops_peak))
  return rows


# --------------------------------------------------------------------- DANN
class _Reverse:
  """Gradient reversal as a torch.autograd.Function (built lazily)."""
  fn = None

  @classmethod
  def get(cls, torch):
    if cls.fn is None:
      class GradReverse(torch.autograd.Function):

        @staticmethod
        def forward(ctx, x, lam):
          ctx.lam = lam
          return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
          return -ctx.lam * g, None
      cls.fn = GradReverse
    return cls.fn


def _torch_dann_nets(torch, kind, params):
  """PyTorch copies of tljax's CNN2D or MLP classifier and discriminator,
  with tljax's initial weights."""
  nn = torch.nn
  if kind == "cnn2d":
    features = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU())
    head = nn.Linear(128, 10)
    width = 128
  else:
    features = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32),
                             nn.ReLU())
    head = nn.Linear(32, 2)
    width = 32
  disc = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 64),
                       nn.ReLU(), nn.Linear(64, 1))
  dense = [m for m in features if isinstance(m, (nn.Linear, nn.Conv2d))]
  pairs = [(m, params["backbone"][f"layer_{i}"]) for i, m in enumerate(dense)]
  pairs += [(head, params["head"])]
  dlin = [m for m in disc if isinstance(m, nn.Linear)]
  pairs += [(m, params["disc"]["backbone"][f"layer_{i}"])
            for i, m in enumerate(dlin[:-1])]
  pairs += [(dlin[-1], params["disc"]["head"])]
  with torch.no_grad():
    for m, p in pairs:
      k = np.asarray(p["kernel"])
      if k.ndim == 4:                       # HWIO -> OIHW
        k = k.transpose(3, 2, 0, 1)
      elif kind == "cnn2d" and k.shape[0] == 64 * 7 * 7:
        # Flax flattens (h, w, c), torch (c, h, w).
        k = k.reshape(7, 7, 64, -1).transpose(2, 0, 1, 3).reshape(
            64 * 7 * 7, -1).T
      else:
        k = k.T
      m.weight.copy_(torch.tensor(np.ascontiguousarray(k)))
      m.bias.copy_(torch.tensor(np.asarray(p["bias"])))
  return features, head, disc


def dann_rows(configs, repeats, torch, flops_peak):
  import optax  # pylint: disable=g-import-not-at-top
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  from tljax import models  # pylint: disable=g-import-not-at-top
  from tljax.methods import domain_adaptation as da  # pylint: disable=g-import-not-at-top
  from tljax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  rows = []
  for kind, b in configs:
    rng = np.random.default_rng(0)
    if kind == "cnn2d":
      shape, backbone, classes = (28, 28, 1), models.CNN2D(), 10
      x = rng.random((b,) + shape, dtype=np.float32)
      xt = rng.random((b,) + shape, dtype=np.float32)
      y = rng.integers(0, classes, b).astype(np.int32)
    else:
      shape, backbone, classes = (2,), models.MLP((32, 32)), 2
      x, y = datasets.make_moons(b, noise=0.1, random_state=0)
      x2, _ = datasets.make_moons(b, noise=0.1, random_state=1)
      rot = np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5),
                                                    np.cos(0.5)]])
      x, xt = x.astype(np.float32), (x2 @ rot.T).astype(np.float32)
      y = y.astype(np.int32)
    model = models.Classifier(backbone, num_classes=classes)
    disc = da.discriminator((64, 64))
    params = da.add_discriminator(models.init_params(model, shape, 0), model,
                                  disc, shape, seed=1)
    tx = optax.adam(1e-3)
    kw = dict(alignment_name="dann", discriminator=disc, total_steps=1000)
    step_fn = da.make_step(model, tx, **kw)
    step = jax.jit(step_fn, donate_argnums=(0,))
    state = state_lib.create_train_state(jax.tree.map(jnp.copy, params), tx)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y),
             "x_target": jnp.asarray(xt)}
    key = jax.random.key(0)
    flops, temp = _compiled(step_fn, state, batch, key)
    want, _ = da.adaptation_loss(params, state, batch, key, model=model, **kw)

    features, head, dnet = _torch_dann_nets(torch, kind, params)
    reverse = _Reverse.get(torch)
    modules = torch.nn.ModuleList([features, head, dnet])
    opt = torch.optim.Adam(modules.parameters(), lr=1e-3)
    tx_s = torch.tensor(x if kind != "cnn2d" else x.transpose(0, 3, 1, 2))
    tx_t = torch.tensor(xt if kind != "cnn2d" else xt.transpose(0, 3, 1, 2))
    ty = torch.tensor(y.astype(np.int64))
    f = torch.nn.functional
    n_steps = [0]

    def peer_loss():
      p = min(n_steps[0] / 1000, 1.0)
      lam = 2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0
      h = features(torch.cat([tx_s, tx_t]))
      logits = head(h[:b])
      dom = dnet(reverse.apply(h, lam))[:, 0]
      align = 0.5 * (f.binary_cross_entropy_with_logits(
          dom[:b], torch.zeros(b)) + f.binary_cross_entropy_with_logits(
              dom[b:], torch.ones(b)))
      return f.cross_entropy(logits, ty) + align

    def peer():
      opt.zero_grad(set_to_none=True)
      loss = peer_loss()
      loss.backward()
      opt.step()
      n_steps[0] += 1
      return loss

    name = "dann CNN2D 28x28x1" if kind == "cnn2d" else "dann MLP two moons"
    row = {"workload": name, "batch": f"{b}+{b}", "flops": flops,
           "tljax_temp_mib": temp / 2**20, "peer": "PyTorch eager"}
    with torch.no_grad():
      row["check_tljax_vs_peer"] = _close(want, peer_loss().item(),
                                          "DANN loss on shared weights")
    fresh = jax.tree.map(jnp.copy, state)   # the timed calls donate state
    holder = {"state": state}

    def run():
      holder["state"], _ = step(holder["state"], batch, key)
      _block(holder["state"])
    rows.append(_measure(row, run, peer, repeats, torch, flops_peak))
    if kind == "mlp":
      rows.append(_fused_row(row, step_fn, step, fresh, batch, key, peer,
                             repeats, torch, flops_peak))
  return rows


FUSED_STEPS = 100


def _fused_row(single, step_fn, step, state, batch, key, peer, repeats,
               torch, flops_peak):
  """The same step, FUSED_STEPS of them in one compiled call (a
  ``lax.scan`` of ``step_fn``, as the trainer's ``steps_per_call`` runs
  them), per step; the peer's single eager step is timed beside it.
  Checked first: the fused call's parameters equal those of FUSED_STEPS
  calls of the compiled single ``step``."""
  def many(st):
    return jax.lax.scan(lambda s, _: step_fn(s, batch, key), st, None,
                        length=FUSED_STEPS)
  fused = jax.jit(many, donate_argnums=(0,))
  ref = jax.tree.map(jnp.copy, state)
  for _ in range(FUSED_STEPS):
    ref, _ = step(ref, batch, key)
  got, _ = fused(jax.tree.map(jnp.copy, state))
  err = max(_rel_err(a, b) for a, b in zip(jax.tree.leaves(got.params),
                                           jax.tree.leaves(ref.params)))
  if err > CHECK_RTOL:
    raise SystemExit(f"check failed: {FUSED_STEPS} fused steps differ from "
                     f"{FUSED_STEPS} single steps by {err:.2e}")
  flops, temp = _compiled(many, state)   # XLA counts the body once
  row = {**{k: single[k] for k in ("batch", "peer")},
         "workload": f"{single['workload']}, {FUSED_STEPS} steps per call "
                     "(lax.scan), per step",
         "flops": flops, "tljax_temp_mib": temp / 2**20,
         "check_fused_vs_single_steps": err}
  holder = {"state": jax.tree.map(jnp.copy, state)}

  def run():
    holder["state"], _ = fused(holder["state"])
    _block(holder["state"])
  return _measure(row, run, peer, repeats, torch, flops_peak,
                  steps_per_call=FUSED_STEPS)


def resnet_rows(sizes, batch, repeats, torch, flops_peak):
  """ResNet-18 training steps (cross-entropy, SGD with momentum, BatchNorm
  in training mode) against the same network in PyTorch eager: torchvision's
  module and state-dict names (``tests/torch_reference.py``; torchvision
  itself does not install beside the pinned torch here), its random weights
  converted into tljax's with :mod:`tljax.models.convert`."""
  import optax  # pylint: disable=g-import-not-at-top
  from tljax import models  # pylint: disable=g-import-not-at-top
  from tljax.models import convert  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
  import torch_reference  # pylint: disable=g-import-not-at-top
  rows = []
  classes = 10
  for size in sizes:
    net = torch_reference.torch_resnet(18, classes, seed=0).train()
    params, state = convert.from_torchvision_resnet(
        torch_reference.state_dict_numpy(net))
    model = models.Classifier(models.build_backbone("resnet18"), classes)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    y = rng.integers(0, classes, batch).astype(np.int32)
    tx = optax.sgd(0.01, momentum=0.9)

    def loss_fn(p, st, xb, yb):
      logits, new = model.apply({"params": p, **st}, xb, train=True,
                                mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, yb).mean(), new

    def tj_step(carry, xb, yb):
      p, st, o = carry
      (loss, new), g = jax.value_and_grad(loss_fn, has_aux=True)(p, st, xb, yb)
      u, o = tx.update(g, o, p)
      return (optax.apply_updates(p, u), new, o), loss

    carry = (params, state, tx.init(params))
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    want = float(loss_fn(params, state, xj, yj)[0])
    flops, temp = _compiled(tj_step, carry, xj, yj)
    step = jax.jit(tj_step, donate_argnums=(0,))
    holder = {"c": jax.tree.map(jnp.copy, carry)}

    def run():
      holder["c"], loss = step(holder["c"], xj, yj)
      _block(loss)

    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    tx_ = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    ty = torch.tensor(y.astype(np.int64))

    def peer():
      opt.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(net(tx_), ty)
      loss.backward()
      opt.step()
      return loss

    row = {"workload": f"resnet18 step {size}x{size}x3", "batch": str(batch),
           "flops": flops, "tljax_temp_mib": temp / 2**20,
           "peer": "PyTorch eager (torchvision layout)"}
    with torch.no_grad():  # training-mode BatchNorm on both sides
      got = torch.nn.functional.cross_entropy(net(tx_), ty).item()
    row["check_tljax_vs_peer"] = _close(want, got, "ResNet-18 loss")
    rows.append(_measure(row, run, peer, repeats, torch, flops_peak,
                         budget_s=2.0))
  return rows


# ------------------------------------------------------------------- report
def _measure(row, run, peer, repeats, torch, flops_peak, budget_s=4.0,
             steps_per_call=1):
  """Times ``run`` (tljax, ``steps_per_call`` steps per call; reported per
  step) against ``peer`` on the faster torch thread count, fills ``row``
  and prints its line."""
  row["torch_threads"] = _torch_threads(peer, torch)
  tj, tp = _time_pair(run, peer, repeats, budget_s=budget_s)
  tj = {k: (v / steps_per_call if k.endswith("_s") else v)
        for k, v in tj.items()}
  _finish(row, tj, tp, flops_peak)
  print(_line(row), flush=True)
  return row


def _finish(row, tj, tp, flops_peak):
  row["tljax"] = tj
  row["tljax_gflops"] = row["flops"] / tj["median_s"] / 1e9
  row["tljax_frac_matmul"] = row["flops"] / tj["median_s"] / flops_peak
  if tp is not None:
    row["peer_time"] = tp
    row["ratio_tljax_over_peer"] = tj["median_s"] / tp["median_s"]
  row["load_average"] = os.getloadavg()[0]


def _ms(s):
  return f"{1e3 * s:,.1f}" if s >= 0.01 else f"{1e3 * s:.2f}"


def _line(r):
  peer = r.get("peer_time")
  ratio = r.get("ratio_tljax_over_peer")
  if peer:
    peer_txt = (f"{r['peer']}, {r['torch_threads']} thr: "
                f"{_ms(peer['median_s'])} ({_ms(peer['min_s'])}) | "
                f"{ratio:.3f} | {1 / ratio:.1f}x "
                f"({peer['min_s'] / r['tljax']['min_s']:.1f}x) | ")
  else:
    peer_txt = "tljax only | | | "
  return (f"| {r['workload']} | {r['batch']} | {_ms(r['tljax']['median_s'])}"
          f" ({_ms(r['tljax']['min_s'])}) | " + peer_txt
          + f"{r['tljax_gflops']:.2f} | {100 * r['tljax_frac_matmul']:.1f}% | "
          f"{r['tljax_temp_mib']:,.1f}"
          + (f" (plain {r['plain_temp_mib']:,.0f})" if "plain_temp_mib" in r
             else "") + " |")


HEADER = ("| workload | B | tljax ms, median (min) | peer ms, median (min) | "
          "tljax/peer (medians) | speed-up, medians (mins) | tljax GFLOP/s | "
          "% of jnp matmul | XLA temp MiB |\n|" + "---|" * 9)


WORKLOADS = ("triplet", "maml", "dann", "resnet")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--quick", action="store_true",
                 help="B = 256 triplets, MAML 1 step, the smallest DANN; "
                 "3 repeats")
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                               "results", "speed.json"))
  p.add_argument("--repeats", type=int, default=0)
  p.add_argument("--only", default=",".join(WORKLOADS),
                 help="comma-separated workloads to run, of "
                 + ", ".join(WORKLOADS))
  args = p.parse_args()
  only = set(args.only.split(","))
  if only - set(WORKLOADS):
    p.error(f"--only: unknown workloads {sorted(only - set(WORKLOADS))}; "
            f"choose from {', '.join(WORKLOADS)}")
  import pytorch_metric_learning  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  repeats = args.repeats or (3 if args.quick else 5)
  load0 = os.getloadavg()
  rates = matmul_rates()
  print(f"date: {datetime.date.today()}; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, {jax.devices()[0].device_kind}; "
        f"jax {jax.__version__}, torch {torch.__version__}, PML "
        f"{pytorch_metric_learning.__version__}")
  print("2048^2 f32 matmul GFLOP/s: " + ", ".join(
      f"{k} {v / 1e9:.1f}" for k, v in rates.items()))
  print(f"load average at start: {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}")
  print(HEADER, flush=True)
  peak = rates["jnp"]
  rows = []
  if "triplet" in only:
    rows += (triplet_rows((256,), (256,), repeats, torch, peak) if args.quick
             else triplet_rows((256, 1024, 4096), (256, 1024), repeats, torch,
                               peak))
  if "maml" in only:
    rows += maml_rows((1,) if args.quick else (1, 5), repeats, torch, peak)
  if "dann" in only:
    rows += dann_rows((("cnn2d", 64),) if args.quick else
                      (("cnn2d", 64), ("cnn2d", 128), ("mlp", 128)), repeats,
                      torch, peak)
  if "resnet" in only:
    rows += resnet_rows((32,) if args.quick else (32, 224), 32, repeats,
                        torch, peak)
  load1 = os.getloadavg()
  print(f"load average at end: {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"date": str(datetime.date.today()),
               "command": " ".join(["python", "benchmarks/speed.py"]
                                   + sys.argv[1:]),
               "machine": {"cpus": os.cpu_count(),
                           "processor": platform.processor(),
                           "device": str(jax.devices()[0]),
                           "load_average_start": load0,
                           "load_average_end": load1},
               "versions": {"jax": jax.__version__, "torch": torch.__version__,
                            "pytorch_metric_learning":
                                pytorch_metric_learning.__version__},
               "matmul_flops": rates, "check_rtol": CHECK_RTOL,
               "rows": rows}, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
