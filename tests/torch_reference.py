"""Independent torch references for the conversion parity tests: a ResNet
with torchvision's module and state-dict names and a ViT with timm's,
written from torch.nn primitives (torchvision and timm themselves do not
install beside the pinned torch here). NCHW, eval mode.

Not a test module (no ``test_`` prefix): imported by test_convert.py and
test_vit.py.
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


# ------------------------------------------------------------------ ResNet
class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = _downsample(inplanes, planes * self.expansion, stride)

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    idt = x if self.downsample is None else self.downsample(x)
    return self.relu(out + idt)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU()
    self.downsample = _downsample(inplanes, planes * self.expansion, stride)

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    idt = x if self.downsample is None else self.downsample(x)
    return self.relu(out + idt)


def _downsample(inplanes, outplanes, stride):
  if stride == 1 and inplanes == outplanes:
    return None
  return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False),
                       nn.BatchNorm2d(outplanes))


class TorchResNet(nn.Module):
  """torchvision.models.ResNet's structure: 7x7/2 stem, 3x3/2 max pool,
  four stages (stride in the first block of stages 2-4, on the 3x3 conv of
  a bottleneck), global average pool, fc."""

  def __init__(self, block, layers, num_classes, width=64, in_chans=3):
    super().__init__()
    self.inplanes = width
    self.conv1 = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    for i, n in enumerate(layers):
      blocks = []
      for j in range(n):
        blocks.append(block(self.inplanes, width * 2 ** i,
                            2 if (i > 0 and j == 0) else 1))
        self.inplanes = width * 2 ** i * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(self.inplanes, num_classes)

  def features(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for i in range(1, 5):
      x = getattr(self, f"layer{i}")(x)
    return torch.flatten(self.avgpool(x), 1)

  def forward(self, x):
    return self.fc(self.features(x))


def torch_resnet(depth, num_classes, width=64, in_chans=3, seed=0):
  """A random ResNet-<depth> in eval mode, with random BatchNorm affine
  parameters and running statistics (not the initial 1s and 0s)."""
  block, layers = {18: (BasicBlock, (2, 2, 2, 2)),
                   34: (BasicBlock, (3, 4, 6, 3)),
                   50: (Bottleneck, (3, 4, 6, 3)),
                   101: (Bottleneck, (3, 4, 23, 3))}[depth]
  torch.manual_seed(seed)
  net = TorchResNet(block, layers, num_classes, width, in_chans)
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(0.5 + torch.rand(c, generator=g))
        m.bias.copy_(0.1 * torch.randn(c, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
        m.running_var.copy_(0.5 + torch.rand(c, generator=g))
        m.num_batches_tracked.fill_(7)
  return net.eval()


# --------------------------------------------------------------------- ViT
class Attention(nn.Module):
  def __init__(self, dim, num_heads):
    super().__init__()
    self.num_heads = num_heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, c = x.shape
    h = self.num_heads
    qkv = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)) / math.sqrt(c // h)
    x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
    return self.proj(x)


class Mlp(nn.Module):
  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.act = nn.GELU()
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
  def __init__(self, dim, num_heads, hidden):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.attn = Attention(dim, num_heads)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = Mlp(dim, hidden)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class TorchViT(nn.Module):
  """timm.models.vision_transformer.VisionTransformer's structure with
  class-token pooling: patch_embed.proj, cls_token, pos_embed (the cls
  token's included), blocks.<i>, norm, head."""

  def __init__(self, img_size, patch, dim, depth, num_heads, hidden,
               num_classes):
    super().__init__()
    self.patch_embed = nn.Module()
    self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
    n = (img_size // patch) ** 2
    self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, dim))
    self.blocks = nn.ModuleList([Block(dim, num_heads, hidden)
                                 for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.head = nn.Linear(dim, num_classes)

  def features(self, x):
    x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + self.pos_embed
    for blk in self.blocks:
      x = blk(x)
    return self.norm(x)[:, 0]

  def forward(self, x):
    return self.head(self.features(x))


def torch_vit(img_size=16, patch=4, dim=32, depth=2, num_heads=4, hidden=64,
              num_classes=5, seed=0):
  """A random ViT in eval mode; the cls token, position embedding and
  LayerNorms random too (timm starts them at 0 / 1)."""
  torch.manual_seed(seed)
  net = TorchViT(img_size, patch, dim, depth, num_heads, hidden, num_classes)
  with torch.no_grad():
    net.cls_token.normal_(0, 0.5)
    net.pos_embed.normal_(0, 0.5)
    for m in net.modules():
      if isinstance(m, nn.LayerNorm):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
  return net.eval()


def state_dict_numpy(net):
  return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def outputs(net, x_nhwc):
  """``(logits, pooled features)`` of a reference net on NHWC numpy
  images."""
  x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    h = net.features(x)
    return net.fc(h).numpy() if hasattr(net, "fc") else net.head(h).numpy(), \
        h.numpy()


def interpolate_bilinear(grid_hwc, size):
  """torch's bilinear resize (half-pixel centres) of an (h, w, c) grid."""
  t = torch.from_numpy(grid_hwc.transpose(2, 0, 1)[None])
  return F.interpolate(t, size=size, mode="bilinear",
                       align_corners=False)[0].numpy().transpose(1, 2, 0)
