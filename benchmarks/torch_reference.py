"""PyTorch twins of avsep_jax's Sound of Pixels models, for measuring speed only.

Not part of the package: `benchmarks/train_step.py` runs this file in its own
environment (`.venv-torch`, from `benchmarks/requirements-torch.txt`) as a
worker that builds a model and times training steps on request. The twins
follow the original PyTorch code's way of doing things (NCHW, `torch.stft`,
SoP's `warpgrid` + `F.grid_sample`, torchvision's ResNet-18 layout) at the
shapes and widths of our configs, so that both sides do the same work:

- `sop_cpu`: `configs/sop.py` (CPU default): 5-level GroupNorm U-Net (ngf 16,
  nearest up + 3x3 conv) to K = 16, a 4-conv visual net (16-32-64-64, GroupNorm)
  on 64 px crops, average pool, linear, sigmoid; ratio masks, weighted L1; Adam.
- `sop_full`: `configs/sop.py:full`: 7-level BatchNorm U-Net (ngf 64, bilinear
  up) to K = 32, dilated ResNet-18 on 3 frames of 224 px, 3x3 conv to K, max
  over frames and space, sigmoid; binary masks, weighted BCE; SGD.
- `crn_cpu`: `configs/crn.py` (CPU default) on 2-source mixtures: Co-Separation's
  visual vector (64) tiled at the 5-level U-Net's bottleneck (one way down per
  mixture, one way up per source), a small-convnet object-consistency
  classifier, then 2 refinement steps of a half-width U-Net on (mask, residual
  mask) adding to the logits; weighted L1 on every step + 0.05 x cross-entropy;
  Adam. The alignment head is built (its parameters count) but, as its loss
  weight is 0 in this config, not run.
- `crn_full`: `configs/crn.py:full`: ResNet-18 on 224 px crops with a 1x1 conv
  to 128 + BatchNorm + flatten + linear to 512; 7-level BatchNorm U-Net with
  transposed convs, the vector tiled at its bottleneck; ResNet-18 classifier
  on the separated spectrogram; 3 refinement steps of a same-size U-Net whose
  output replaces the logits; the alignment loss (weight 100) through the
  classifier's trunk and a projection head; Adam (b1 0.5, weight decay 1e-4,
  classifier at 1e-5).

The step: STFT (Hann 1022/256) of the mixture and the sources' shares, the
log-frequency warp, ground-truth masks and loss weights, forward, loss,
backward, optimiser step; as our jitted step. With `"mode": "inference"` the
worker separates instead (`Inference`: mixture in, every source's waveform
out, in eval mode without gradients; as our `evaluate.separate_mixture`).

Protocol (`--serve`): one JSON request per stdin line, one JSON reply per line:
  {"cmd": "setup", "model": "sop_cpu", "batch": 8, "compile": false,
   "mode": "train" | "inference", "device": "cpu" | "cuda"} -> {"params": N, "setup_s": s}
  {"cmd": "time", "steps": k} -> {"seconds": s, "loss": x}
  {"cmd": "peak"} -> {"peak_rss_mb": m, "peak_device_mb": m or null}

On "cuda" the model, the batch and the STFT/warp constants live on the GPU,
cuDNN's autotuner is on (`cudnn.benchmark`: the originals leave it off, so this
is PyTorch at its best, not as the originals ran), and `time` ends by reading
the loss (a device sync), so the steps it reports have finished.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

SAMPLE_RATE = 11025
N_FFT, HOP = 1022, 256

MODELS = {
    "sop_cpu": dict(segment=16383, warp_bins=128, num_mix=2, channels=16,
                    unet=dict(ngf=16, levels=5, max_channels=128, norm="group", groups=8,
                              upsample="nearest"),
                    visual="convnet", crop=64, frames=0, mask="ratio", mask_max=1.0,
                    optimizer="adam", lr=1e-3),
    "sop_full": dict(segment=65535, warp_bins=256, num_mix=2, channels=32,
                     unet=dict(ngf=64, levels=7, max_channels=512, norm="batch", groups=8,
                               upsample="bilinear"),
                     visual="resnet18_dilated", crop=224, frames=3, mask="binary",
                     mask_max=5.0, optimizer="sgd", lr=1e-3),
    "crn_cpu": dict(segment=16383, warp_bins=128, num_mix=2, visual_dim=64, num_classes=13,
                    unet=dict(ngf=16, levels=5, max_channels=128, norm="group", groups=8,
                              upsample="nearest"),
                    refine_unet=dict(ngf=8, levels=5, max_channels=128, norm="group", groups=4,
                                     upsample="nearest"),
                    refine_steps=2, step_weights=(1.0, 2 / 3, 1 / 3), classification=0.05,
                    crop=64, frames=0, mask="ratio", mask_max=1.0, optimizer="adam", lr=1e-3),
    "crn_full": dict(segment=65535, warp_bins=256, num_mix=2, visual_dim=512, num_classes=21,
                     unet=dict(ngf=64, levels=7, max_channels=512, norm="batch", groups=8,
                               upsample="transpose"),
                     refine_unet=dict(ngf=64, levels=7, max_channels=512, norm="batch",
                                      groups=8, upsample="transpose"),
                     refine_steps=3, step_weights=(1.0, 0.5, 1 / 3, 1 / 6), classification=0.05,
                     alignment=100.0, crop=224, frames=0, mask="ratio", mask_max=5.0,
                     optimizer="adam", lr=1e-4),
}


def norm_layer(kind: str, channels: int, groups: int) -> nn.Module:
  if kind == "batch":
    return nn.BatchNorm2d(channels)
  if kind == "group":
    return nn.GroupNorm(min(groups, channels), channels)
  return nn.Identity()


class UNet(nn.Module):
  """SoP's U-Net: 4x4 stride-2 convs down, x2 up + 3x3 conv, skips; output conv biased."""

  def __init__(self, in_ch: int, out_ch: int, *, ngf: int, levels: int, max_channels: int,
               norm: str, groups: int, upsample: str, cond_dim: int = 0):
    super().__init__()
    ch = [min(ngf * 2**i, max_channels) for i in range(levels)]
    self.levels, self.upsample = levels, upsample
    self.input_norm = norm_layer(norm, in_ch, 1)
    self.down = nn.ModuleList(nn.Conv2d(in_ch if i == 0 else ch[i - 1], ch[i], 4, 2, 1,
                                        bias=False) for i in range(levels))
    self.down_norms = nn.ModuleList(norm_layer(norm if 0 < i < levels - 1 else "none", ch[i],
                                               groups) for i in range(levels))
    def up_conv(i):
      cin = ch[i] + cond_dim if i == levels - 1 else 2 * ch[i]
      cout = out_ch if i == 0 else ch[i - 1]
      if upsample == "transpose":
        return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=i == 0)
      return nn.Conv2d(cin, cout, 3, 1, 1, bias=i == 0)
    self.up = nn.ModuleList(up_conv(i) for i in range(levels))
    self.up_norms = nn.ModuleList(norm_layer(norm if i > 0 else "none",
                                             out_ch if i == 0 else ch[i - 1], groups)
                                  for i in range(levels))

  def forward(self, x, cond=None):
    return self.decode(self.encode(x), cond)

  def encode(self, x):
    skips, h = [], self.input_norm(x)
    for i, (conv, norm) in enumerate(zip(self.down, self.down_norms)):
      h = norm(conv(h if i == 0 else F.leaky_relu(h, 0.2)))
      skips.append(h)
    return skips

  def decode(self, skips, cond=None):
    h = skips[-1]
    if cond is not None:   # the visual vector tiled over the bottleneck, before the audio
      h = torch.cat([cond[:, :, None, None].expand(-1, -1, *h.shape[2:]), h], dim=1)
    for i in reversed(range(self.levels)):
      h = F.relu(h)
      if self.upsample == "nearest":
        h = F.interpolate(h, scale_factor=2, mode="nearest")
      elif self.upsample == "bilinear":
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
      h = self.up_norms[i](self.up[i](h))
      if i > 0:
        h = torch.cat([skips[i - 1], h], dim=1)
    return h


class ConvNet(nn.Module):
  """The CPU recipe's visual net: 4x4 stride-2 convs with GroupNorm and ReLU, pool, linear."""

  def __init__(self, out_dim: int, widths=(16, 32, 64, 64), groups: int = 8,
               in_channels: int = 3):
    super().__init__()
    chans = (in_channels,) + tuple(widths)
    self.convs = nn.ModuleList(nn.Conv2d(a, b, 4, 2, 1, bias=False)
                               for a, b in zip(chans[:-1], chans[1:]))
    self.norms = nn.ModuleList(nn.GroupNorm(min(groups, b), b) for b in chans[1:])
    self.out = nn.Linear(chans[-1], out_dim)

  def forward(self, x):                     # [M, 3, H, W] -> [M, out_dim]
    for conv, norm in zip(self.convs, self.norms):
      x = F.relu(norm(conv(x)))
    return self.out(x.mean(dim=(2, 3)))


class BasicBlock(nn.Module):
  def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1,
               first_dilation: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, first_dilation, first_dilation, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, dilation, dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18Dilated(nn.Module):
  """torchvision's ResNet-18 trunk; `dilated`: SoP's `_nostride_dilate(2)` on layer4."""

  def __init__(self, in_channels: int = 3, dilated: bool = True):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    layers, cin = [], 64
    for i, cout in enumerate((64, 128, 256, 512)):
      if i == 3 and dilated:  # layer4: no stride; the first 3x3 keeps dilation 1, others 2
        blocks = [BasicBlock(cin, cout, 1, dilation=2, first_dilation=1),
                  BasicBlock(cout, cout, 1, dilation=2, first_dilation=2)]
      else:
        stride = 1 if i == 0 else 2
        blocks = [BasicBlock(cin, cout, stride), BasicBlock(cout, cout)]
      layers.append(nn.Sequential(*blocks))
      cin = cout
    self.layers = nn.Sequential(*layers)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    return self.layers(x)


class SoundOfPixels(nn.Module):
  def __init__(self, spec: dict):
    super().__init__()
    k = spec["channels"]
    self.unet = UNet(1, k, **spec["unet"])
    if spec["visual"] == "convnet":
      self.visual, self.visual_head = ConvNet(k), None
    else:
      self.visual, self.visual_head = ResNet18Dilated(), nn.Conv2d(512, k, 3, 1, 1)
    self.scale = nn.Parameter(torch.ones(k))
    self.bias = nn.Parameter(torch.zeros(()))

  def forward(self, log_mix, pictures):
    """log_mix [B, 1, F, T]; pictures [B, N, 3, H, W] or [B, N, T', 3, H, W]."""
    features = self.unet(log_mix)                                     # [B, K, F, T]
    lead = pictures.shape[:-3]
    flat = pictures.reshape((-1,) + pictures.shape[-3:])
    if self.visual_head is None:
      vectors = self.visual(flat)
    else:
      vectors = self.visual_head(self.visual(flat)).amax(dim=(2, 3))
    vectors = vectors.reshape(lead + (-1,))
    if vectors.dim() == 4:
      vectors = vectors.amax(dim=2)                                   # max over frames
    weights = torch.sigmoid(vectors) * self.scale                     # [B, N, K]
    return torch.einsum("bkft,bnk->bnft", features, weights) + self.bias


class CRN(nn.Module):
  """Co-Separation + weight-shared refinement (CPU default, `refine_update='residual'`)."""

  def __init__(self, spec: dict):
    super().__init__()
    d, self.full = spec["visual_dim"], spec["crop"] == 224
    if self.full:
      side = -(-spec["crop"] // 32)
      self.visual = nn.ModuleDict({"trunk": ResNet18Dilated(dilated=False),
                                   "proj": nn.Conv2d(512, 128, 1, bias=False),
                                   "norm": nn.BatchNorm2d(128),
                                   "out": nn.Linear(128 * side * side, d)})
      self.classifier = nn.ModuleDict({"trunk": ResNet18Dilated(1, dilated=False),
                                       "out": nn.Linear(512, spec["num_classes"])})
      rows, map_channels, width, dim, norm = -(-spec["warp_bins"] // 32), 512, 128, 512, "batch"
    else:
      self.visual = ConvNet(d)
      self.classifier = ConvNet(spec["num_classes"], in_channels=1)
      rows, map_channels, width, dim, norm = -(-spec["warp_bins"] // 16), 64, 32, 64, "group"
    self.unet = UNet(1, 1, cond_dim=d, **spec["unet"])
    self.refine = UNet(2, 1, cond_dim=d, **spec["refine_unet"])
    self.steps = spec["refine_steps"]
    self.align = nn.ModuleDict({"proj": nn.Conv2d(map_channels, width, 1, bias=False),
                                "norm": norm_layer(norm, width, 8),
                                "out": nn.Linear(rows * width, dim)})

  def vectors(self, crops):                       # [M, 3, H, W] -> [M, D]
    if not self.full:
      return self.visual(crops)
    v = self.visual
    x = F.relu(v["norm"](v["proj"](v["trunk"](crops))))
    return v["out"](x.flatten(1))

  def classify(self, log_mag):                    # [M, 1, F, T] -> [M, C]
    if not self.full:
      return self.classifier(log_mag)
    return self.classifier["out"](self.classifier["trunk"](log_mag).mean(dim=(2, 3)))

  def alignment(self, log_mag):                   # [M, 1, F, T] -> [M, dim]
    a = self.align
    x = F.relu(a["norm"](a["proj"](self.classifier["trunk"](log_mag)))).mean(dim=3)
    return a["out"](x.flatten(1))

  def forward(self, log_mix, mix_mag, crops):
    """log_mix, mix_mag [B, 1, F, T]; crops [B, N, 3, H, W] -> (logits [S, B, N, F, T], class logits)."""
    b, n = crops.shape[:2]
    vectors = self.vectors(crops.reshape((b * n,) + crops.shape[2:]))        # [B*N, D]
    skips = [h.repeat_interleave(n, dim=0) for h in self.unet.encode(log_mix)]
    logits = self.unet.decode(skips, vectors).reshape(b, n, *log_mix.shape[2:])
    separated = mix_mag * torch.sigmoid(logits)                             # [B, N, F, T]
    classes = self.classify(torch.log(separated + 1e-10).reshape(b * n, 1, *separated.shape[2:]))
    steps = [logits]
    for _ in range(self.steps):
      masks = torch.sigmoid(logits)
      residual = (mix_mag[:, 0] - (masks.sum(1) * mix_mag[:, 0])) / (mix_mag[:, 0] + 1e-10)
      x = torch.stack([masks, residual[:, None].expand_as(masks)], dim=2)   # [B, N, 2, F, T]
      update = self.refine(x.reshape((b * n,) + x.shape[2:]), vectors).reshape(logits.shape)
      logits = update if self.full else logits + update    # 'replace' (full) or 'residual'
      steps.append(logits)
    return torch.stack(steps), classes.reshape(b, n, -1)


def warpgrid(batch: int, height: int, width: int) -> torch.Tensor:
  """SoP's `warpgrid(warp=True)`: log-frequency rows over the linear bins."""
  x = np.linspace(-1, 1, width)
  y = np.linspace(-1, 1, height)
  grid = np.zeros((batch, height, width, 2), np.float32)
  grid[..., 0] = x[None, None, :]
  grid[..., 1] = ((np.power(21, (y + 1) / 2) - 11) / 10)[None, :, None]
  return torch.from_numpy(grid)


class Step:
  """One model, its optimiser and a fixed batch: `run(k)` trains k steps."""

  def __init__(self, name: str, batch_size: int, compile_model: bool, seed: int = 0,
               device: str = "cpu"):
    torch.manual_seed(seed)
    self.spec = spec = MODELS[name]
    self.model = (CRN(spec) if name.startswith("crn") else SoundOfPixels(spec)).to(device)
    if name == "crn_full":  # the classifier at 1e-5, b1 0.5, weight decay 1e-4
      classifier = set(map(id, self.model.classifier.parameters()))
      groups = [{"params": [p for p in self.model.parameters() if id(p) not in classifier]},
                {"params": list(self.model.classifier.parameters()), "lr": 1e-5}]
      self.opt = torch.optim.Adam(groups, lr=spec["lr"], betas=(0.5, 0.999), weight_decay=1e-4)
    elif spec["optimizer"] == "adam":
      self.opt = torch.optim.Adam(self.model.parameters(), lr=spec["lr"])
    else:
      self.opt = torch.optim.SGD(self.model.parameters(), lr=spec["lr"], momentum=0.9,
                                 weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    n, length = spec["num_mix"], spec["segment"]
    self.sources = torch.from_numpy(
        rng.uniform(-0.5, 0.5, (batch_size, n, length)).astype(np.float32)).to(device)
    shape = (batch_size, n) + ((spec["frames"],) if spec["frames"] else ()) + (
        3, spec["crop"], spec["crop"])
    self.pictures = torch.from_numpy(rng.normal(size=shape).astype(np.float32)).to(device)
    self.labels = torch.from_numpy(rng.integers(0, 13, (batch_size, n))).to(device)
    self.window = torch.hann_window(N_FFT, device=device)
    frames = length // HOP + 1
    self.grid = warpgrid(batch_size * (n + 1), spec["warp_bins"], frames).to(device)
    self.forward = torch.compile(self._loss) if compile_model else self._loss

  def _magnitudes(self, waves):                     # [M, L] -> warped [M, 1, F', T]
    spec = torch.stft(waves, N_FFT, HOP, window=self.window, center=True,
                      return_complex=True).abs()
    return F.grid_sample(spec[:, None], self.grid[:len(waves)], align_corners=True)

  def _loss(self, sources, pictures):
    b, n, length = sources.shape
    shares = sources / n
    mixture = shares.sum(1)
    mags = self._magnitudes(torch.cat([mixture, shares.reshape(b * n, length)]))
    mix_mag, source_mag = mags[:b], mags[b:].reshape(b, n, *mags.shape[2:])
    weight = torch.clamp(torch.log1p(mix_mag), 1e-3, 10)               # [B, 1, F, T]
    if isinstance(self.model, CRN):
      steps, classes = self.model(torch.log(mix_mag + 1e-10), mix_mag, pictures)
      target = torch.clamp(source_mag / (mix_mag + 1e-10), 0, self.spec["mask_max"])
      loss = sum(w * (weight * (torch.sigmoid(s) - target).abs()).mean()
                 for w, s in zip(self.spec["step_weights"], steps))
      loss = loss + self.spec["classification"] * F.cross_entropy(
          classes.reshape(-1, classes.shape[-1]), self.labels.reshape(-1))
      if self.spec.get("alignment"):
        final = mix_mag * torch.sigmoid(steps[-1])
        flat = lambda m: torch.log(m + 1e-10).reshape(-1, 1, *m.shape[2:])
        real, fake = self.model.alignment(flat(source_mag)), self.model.alignment(flat(final))
        loss = loss + self.spec["alignment"] * ((real - fake) ** 2).mean()
      return loss
    logits = self.model(torch.log(mix_mag + 1e-10), pictures)         # [B, N, F, T]
    if self.spec["mask"] == "binary":
      target = (source_mag > 0.5 * mix_mag).float()
      per_bin = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
      target = torch.clamp(source_mag / (mix_mag + 1e-10), 0, self.spec["mask_max"])
      per_bin = (torch.sigmoid(logits) - target).abs()
    return (weight * per_bin).mean()

  def run(self, steps: int) -> float:
    for _ in range(steps):
      self.opt.zero_grad(set_to_none=True)
      loss = self.forward(self.sources, self.pictures)
      loss.backward()
      self.opt.step()
    return float(loss.detach())


class Inference:
  """One model in eval mode and a fixed batch: `run(k)` separates the batch k times.

  As the originals' evaluation: STFT of the mixture, log-frequency warp, the
  model without gradients (BatchNorm on running statistics), sigmoid masks,
  `grid_sample` back to linear frequency (SoP's `warpgrid(warp=False)`), the
  mask times the mixture's complex spectrogram, inverse STFT; every step's
  waveforms for CRN, as our `evaluate.separate_mixture` returns them.
  """

  def __init__(self, name: str, batch_size: int, compile_model: bool, seed: int = 0,
               device: str = "cpu"):
    torch.manual_seed(seed)
    self.spec = spec = MODELS[name]
    self.model = (CRN(spec) if name.startswith("crn") else SoundOfPixels(spec)).to(device).eval()
    rng = np.random.default_rng(seed)
    n, length = spec["num_mix"], spec["segment"]
    self.mixture = torch.from_numpy(rng.uniform(-0.5, 0.5, (batch_size, length)
                                                ).astype(np.float32)).to(device)
    shape = (batch_size, n) + ((spec["frames"],) if spec["frames"] else ()) + (
        3, spec["crop"], spec["crop"])
    self.pictures = torch.from_numpy(rng.normal(size=shape).astype(np.float32)).to(device)
    self.window = torch.hann_window(N_FFT, device=device)
    frames = length // HOP + 1
    self.grid = warpgrid(batch_size, spec["warp_bins"], frames).to(device)
    self.unwarp = unwarpgrid(batch_size * n, N_FFT // 2 + 1, frames).to(device)
    self.forward = torch.compile(self._separate) if compile_model else self._separate

  def _separate(self, mixture, pictures):
    b, length = mixture.shape
    n = pictures.shape[1]
    spec = torch.stft(mixture, N_FFT, HOP, window=self.window, center=True,
                      return_complex=True)                              # [B, 512, T]
    mix_mag = F.grid_sample(spec.abs()[:, None], self.grid, align_corners=True)
    log_mix = torch.log(mix_mag + 1e-10)
    if isinstance(self.model, CRN):
      steps, _ = self.model(log_mix, mix_mag, pictures)
    else:
      steps = [self.model(log_mix, pictures)]
    waves = []
    for logits in steps:                                                 # [B, N, F', T]
      masks = F.grid_sample(torch.sigmoid(logits).reshape(b * n, 1, *logits.shape[2:]),
                            self.unwarp, align_corners=True)[:, 0]      # [B*N, 512, T]
      if self.spec["mask"] == "binary":
        masks = (masks > 0.5).float()
      est = masks * spec.repeat_interleave(n, dim=0)
      waves.append(torch.istft(est, N_FFT, HOP, window=self.window, center=True,
                               length=length).reshape(b, n, length))
    return torch.stack(waves)

  def run(self, steps: int) -> float:
    with torch.inference_mode():
      for _ in range(steps):
        out = self.forward(self.mixture, self.pictures)
    return float(out.abs().mean())


def unwarpgrid(batch: int, height: int, width: int) -> torch.Tensor:
  """SoP's `warpgrid(warp=False)`: for each linear bin, its row in the warped map."""
  x = np.linspace(-1, 1, width)
  y = np.linspace(-1, 1, height)
  grid = np.zeros((batch, height, width, 2), np.float32)
  grid[..., 0] = x[None, None, :]
  grid[..., 1] = (np.log(y * 10 + 11) / np.log(21) * 2 - 1)[None, :, None]
  return torch.from_numpy(grid)


def peak_rss_mb() -> float:
  """This process's peak resident memory (VmHWM)."""
  for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024
  return math.nan


def serve() -> None:
  step, device = None, "cpu"
  for line in sys.stdin:
    request = json.loads(line)
    if request["cmd"] == "setup":
      begin = time.perf_counter()
      kind = Inference if request.get("mode") == "inference" else Step
      device = request.get("device", "cpu")
      if device == "cuda":
        torch.backends.cudnn.benchmark = True
      step = kind(request["model"], request["batch"], request.get("compile", False),
                  device=device)
      step.run(1)                                   # first step: allocation (and compile)
      reply = {"params": sum(p.numel() for p in step.model.parameters()),
               "setup_s": time.perf_counter() - begin}
    elif request["cmd"] == "time":
      begin = time.perf_counter()
      loss = step.run(request["steps"])
      reply = {"seconds": time.perf_counter() - begin, "loss": loss}
    elif request["cmd"] == "peak":
      reply = {"peak_rss_mb": peak_rss_mb(),
               "peak_device_mb": (torch.cuda.max_memory_allocated() / 2**20
                                  if device == "cuda" else None)}
    else:
      reply = {"error": f"unknown command {request['cmd']!r}"}
    print(json.dumps(reply), flush=True)


if __name__ == "__main__":
  if sys.argv[1:] != ["--serve"]:
    sys.exit(__doc__)
  torch.set_num_threads(int(__import__("os").environ.get("TORCH_THREADS", "0")) or
                        torch.get_num_threads())
  serve()
