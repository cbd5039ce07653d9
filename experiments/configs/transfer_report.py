r"""The transfer report: which strategy to use at which target label budget.

  python experiments/transfer_report.py --workdir=/tmp/tljax/report

No flags needed: pretrain a CNN on mnist1d's clean domain, then on the noisy
domain (mnist1d:noisy, the same ten digits under heavy correlated and iid
noise) compare scratch, a linear probe on cached features, freezing the
first layers, full fine-tuning, L2-SP and LwF at 1, 5, 20, 100 and all
labels per class over 3 seeds. Your own domains (npz holds x, y and
optionally x_test, y_test):

  python experiments/transfer_report.py --workdir=/tmp/tljax/mine \
      --config.source=npz:src.npz --config.target=npz:tgt.npz

Smoke test (seconds): --config=experiments/configs/transfer_report.py:quick

Any image folder (<root>/<class>/*.jpg, or train/ and test/ trees of
them) with a pretrained backbone, e.g. torchvision's ImageNet ResNet-50
(BUILD.md says how to get the .safetensors file):

  python experiments/transfer_report.py --workdir=/tmp/tljax/cub \
      --config=experiments/configs/transfer_report.py:folder \
      --config.target=folder:/data/CUB_200_2011/images \
      --config.init_from=/data/weights/resnet50.safetensors

fine-tunes ResNet-50 at 224x224 (random resized crops and flips, decoded
as batches are drawn; ?size=... on the spec for another size) with SGD
momentum and compares scratch, a linear probe on cached features,
freezing the first stages, full fine-tuning and L2-SP at 5, 20 and all
labels per class over 2 seeds (no source data: source_only and LwF,
which need a source task, are left out).

Measured on the 2-core CPU (docs/results_finetune.md has the full table):
2.3 min wall (94 s CPU) with other jobs on the same cores; best strategy per
budget: 1 label/class source_only 33.0%, 5 linear_probe 33.7 ± 1.0%,
20 linear_probe 44.3 ± 1.4%, 100 finetune 52.5 ± 1.9%, all finetune
57.9 ± 0.2% (scratch 49.3 ± 2.3% with all labels). With
--config.head_from_source=True: l2_sp 48.9 ± 2.0% at 1 label/class,
lwf 59.7 ± 0.6% with all.

Which source to start from, ranked before fine-tuning (candidates): score
every candidate source with LEEP, LogME, H-score, NCE and TransRate on the
labelled target examples, fine-tune them all, and see which score's ranking
predicted the fine-tuned accuracy:

  python experiments/transfer_report.py --workdir=/tmp/tljax/candidates \
      --config=experiments/configs/transfer_report.py:candidates

pretrains CNNs on four mnist1d domains (clean, standard, sheared,
translated) and on a source with fewer classes (clean's digits 0-4:
data:mnist1d:clean?classes=0-4), 1000 steps each, and adds an untrained
one (random); the target is mnist1d:noisy at 5, 20 and all labels per
class, 2 seeds, linear_probe and finetune. Your own list:
--config.candidates="('data:mnist1d:clean', 'ckpt:/tmp/tljax/report/source',
'random')" (ckpt: also reads torchvision / timm .safetensors and big_vision
.npz weights files with their classifier, on a target and model config
they fit, e.g. --config.model.name=resnet18). Smoke test (seconds):
--config=experiments/configs/transfer_report.py:candidates,quick.
Measured 2026-12-02 (docs/results_transferability.md): 331 s wall, 84 s
CPU on one core shared with another job; the best source at every budget
is mnist1d:standard (38.2% at 5 labels/class, 48.6% at 20, 59.2% with
all), picked by LEEP, LogME and NCE at every budget and by H-score at 20
and all (tied at 5); TransRate picked none. The fewer-classes source is
fifth of six after fine-tuning at every budget, and fifth by LEEP, LogME
and NCE.
"""

import ml_collections

from tljax import models


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  args = set(arg.split(",")) - {""}
  if args - {"quick", "candidates", "folder"} or {"candidates",
                                                  "folder"} <= args:
    raise ValueError(f"unknown config argument {arg!r}; use quick (a "
                     "seconds-long smoke run), candidates (rank candidate "
                     "sources), folder (an image folder and a pretrained "
                     "backbone), either with quick (candidates,quick) or "
                     "nothing")
  c = ml_collections.ConfigDict()
  c.source = "mnist1d:clean"
  c.target = "mnist1d:noisy"
  c.data_dir = ""                  # TFDS data dir for tfds: specs
  c.seed = 0
  c.model = models.model_config("auto")  # auto: cnn1d here

  # The source run (tljax.drivers.train); skipped with init_from.
  c.init_from = ""                 # workdir/params of an earlier source run
  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.num_steps = 2000
  c.pretrain.batch_size = 128
  c.pretrain.eval_every = 0
  c.pretrain.log_every = 500
  c.pretrain.checkpoint_every = 500
  c.pretrain.optim = ml_collections.ConfigDict()
  c.pretrain.optim.name = "adam"
  c.pretrain.optim.learning_rate = 1e-3
  c.pretrain.optim.schedule = "cosine"
  c.pretrain.optim.warmup_steps = 100
  c.pretrain.optim.grad_clip_norm = 1.0
  c.pretrain.optim.lr_rules = ()

  # The comparison.
  c.strategies = ("scratch", "linear_probe", "freeze_first", "finetune",
                  "l2_sp", "lwf")  # also: discriminative, gradual
  c.budgets = (1, 5, 20, 100, 0)   # target labels per class; 0 = all
  c.num_seeds = 3
  c.num_steps = 400                # per run, the same for every strategy
  c.batch_size = 64
  c.optim = ml_collections.ConfigDict()  # every strategy's optimizer
  c.optim.name = "adam"
  c.optim.learning_rate = 1e-3
  c.head_from_source = False      # True: start heads from the source head
  c.freeze_layers = 2              # freeze_first: layers kept frozen
  c.freeze_bn = False              # BatchNorm in inference mode (fine-tuning)
  c.l2_sp = ml_collections.ConfigDict({"alpha": 0.1, "beta": 0.01})
  c.lwf = ml_collections.ConfigDict({"weight": 1.0, "temperature": 2.0})
  c.discriminative_decay = 1 / 2.6
  c.eval_examples = 0              # target test examples (0: all)
  c.parallel = "auto"              # auto | single | mesh | pmap

  # Candidate sources, ranked by transferability scores before fine-tuning
  # (empty: the one-source report above). Each is data:<data spec>
  # (pretrained with c.pretrain), ckpt:<params dir or workdir> or random.
  c.candidates = ()
  c.num_finetune = 0               # candidates fine-tuned (top by select_by)
  c.select_by = "log_me"           # leep | log_me | h_score | nce | transrate
  c.candidate_accuracy = "best"    # best strategy per budget, or a strategy

  if "candidates" in args:
    c.candidates = ("data:mnist1d:clean", "data:mnist1d:standard",
                    "data:mnist1d:sheared", "data:mnist1d:translated",
                    "data:mnist1d:clean?classes=0-4",  # fewer classes
                    "random")
    c.pretrain.num_steps = 1000
    c.update(strategies=("linear_probe", "finetune"), budgets=(5, 20, 0),
             num_seeds=2, num_steps=300)

  if "folder" in args:
    # An image folder target, a pretrained backbone and no source data.
    c.source = ""
    c.target = ""                  # folder:<root>[?size=224&...]
    c.init_from = ""               # pretrained backbone (.safetensors, ...)
    c.model.name = "resnet50"
    c.strategies = ("scratch", "linear_probe", "freeze_first", "finetune",
                    "l2_sp")
    c.budgets = (5, 20, 0)
    c.update(num_seeds=2, num_steps=2000, batch_size=32)
    # Fine-tuning a pretrained ResNet: SGD with momentum (Kornblith et
    # al., 2019; TLlib's fine-tuning uses lr 0.01).
    c.optim.name = "momentum"
    c.optim.learning_rate = 0.01
    c.freeze_layers = 3            # stem, stage_1, stage_2

  if "quick" in args and "folder" in args:
    c.update(num_seeds=1, budgets=(2,), num_steps=2, batch_size=4,
             eval_examples=0)
    c.model.resnet.width = 4
  elif "quick" in args:            # seconds: a small MLP, few steps
    c.model.name = "mlp"
    c.model.mlp.features = (32, 32)
    c.pretrain.update(num_steps=10, batch_size=16, eval_every=0,
                      log_every=10, checkpoint_every=0)
    c.pretrain.optim.warmup_steps = 0
    c.update(num_seeds=2, budgets=(1, 0), num_steps=6, batch_size=16,
             eval_examples=200, freeze_layers=1)
    if "candidates" in args:
      c.candidates = ("data:mnist1d:clean", "data:mnist1d:sheared",
                      "random")
      c.budgets = (5, 0)
  return c
