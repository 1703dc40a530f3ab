"""SeCo (Zhou et al., WACV 2023): Sound of Pixels with a video net and consistency features.

As the released code (DongzhanZhou/SeCo) builds it: the mixture's log
magnitude goes through an audio U-Net to K feature maps; each source's frame
clip goes through the video net ("FastNet", a SlowFast Fast pathway,
`motion.FastPathway`) to a vector, which a bias-free linear layer and a
sigmoid turn into K channel weights; SoP's synthesizer (weights x a learned
per-channel scale, summed over channels, plus a bias) gives each source's
mask logits. For the consistency losses (`losses.seco_loss`) a spectrogram
net (`sync_net`, a ResNet-10) embeds, in the video vector's space:

- `audio_sep_feat`: each separated source, the mixture's LOG magnitude times
  its mask (the original's choice);
- `audio_gt_feat`: each true source's log magnitude (training);
- `audio_temp_feat`: a segment of another clip of the same class (training).

The original never gives `sync_net` to its optimiser, so it keeps its random
initialisation while gradients pass through it; the configs reproduce that
with a zero learning rate for it.

Options that depart from the original (configs/seco.py says which its CPU
configs use, docs/seco_cpu.md what each scored): `frame_input='differences'`
shows the video net only what moves, `per_frame_weights` gives each frame's
time span its own channel weights, `motion_channels` gives each source's
per-frame video features to the U-Net as extra input maps (one U-Net pass per
source), video nets that see only motion (`video_net` 'energy' or
'cost_volume'), and `centre_frame_features` (per-frame features minus their
clip mean, so the masks can follow only when a player moves).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avsep_jax.audio import masks as masks_lib
from avsep_jax.models import motion as motion_lib
from avsep_jax.models import unet as unet_lib
from avsep_jax.models import visual as visual_lib


def frames_to_spectrogram_time(per_frame, num_steps: int):
  """Per-frame values `[..., V, K]` -> `[..., num_steps, K]`, linear in time.

  Frame v shows the middle of the v-th of V equal spans of the segment (as the
  data pipeline picks frames), and STFT frame t (center=True) sits at t/(T-1)
  of it, so each STFT frame reads the two frames around its time; before the
  first frame's middle and after the last's the nearest frame holds.
  """
  num_frames = per_frame.shape[-2]
  position = jnp.linspace(0.0, 1.0, num_steps) * num_frames - 0.5    # in frame units
  lo = jnp.clip(jnp.floor(position), 0, num_frames - 1).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, num_frames - 1)
  frac = jnp.clip(position - lo, 0.0, 1.0)[:, None]
  return (jnp.take(per_frame, lo, axis=-2) * (1 - frac)
          + jnp.take(per_frame, hi, axis=-2) * frac)


class MotionEnergyNet(nnx.Module):
  """A video net that sees only how much each part of the picture moves, frame by frame.

  `[M, V, H, W, C]` clips -> per frame, the mean absolute difference from the
  previous frame over the whole picture and over its top, bottom, left and
  right halves (5 values; the first frame's are zeros), each divided by its
  mean over the clip (so the picture's size and contrast drop out), then
  1-D convolutions over frames (`kernel` wide, ReLU) and a linear layer to
  `out_channels`. What a picture looks like never reaches it: only when and
  where it moves.
  """

  NUM_STATS = 5

  def __init__(self, *, widths: tuple[int, ...] = (16, 32), out_channels: int = 64,
               kernel: int = 3, rngs: nnx.Rngs):
    if kernel < 1 or kernel % 2 == 0:
      raise ValueError(f"motion-energy net kernel={kernel}: expected an odd width >= 1")
    chans = (self.NUM_STATS,) + tuple(widths)
    self.convs = nnx.List([nnx.Conv(a, b, (kernel,), padding="SAME", rngs=rngs)
                           for a, b in zip(chans[:-1], chans[1:])])
    self.head = nnx.Linear(chans[-1], out_channels, rngs=rngs)
    self.out_channels = out_channels

  @classmethod
  def stats(cls, clips):
    """`[M, V, H, W, C]` -> `[M, V, 5]` motion energies, each scaled to mean 1 over the clip."""
    diff = jnp.abs(jnp.diff(clips, axis=1, prepend=clips[:, :1])).mean(-1)  # [M, V, H, W]
    h, w = diff.shape[-2:]
    parts = [diff, diff[..., :h // 2, :], diff[..., h // 2:, :], diff[..., :, :w // 2],
             diff[..., :, w // 2:]]
    energy = jnp.stack([p.mean((-2, -1)) for p in parts], -1)
    return energy / (energy.mean(1, keepdims=True) + 1e-6)

  def __call__(self, clips, pool_time: bool = True):
    """`[M, V, H, W, C]` -> `[M, out_channels]`, or per frame `[M, V, out_channels]`."""
    if clips.ndim != 5:
      raise ValueError(f"video net input {clips.shape}: expected [M, T, H, W, C] clips")
    x = self.stats(clips)
    for conv in self.convs:
      x = jax.nn.relu(conv(x))
    x = self.head(x)
    return x.mean(1) if pool_time else x


def _box_mean(x, window: int):
  """Mean over the in-frame pixels of `window x window` neighbourhoods, `[N, H, W, C]`."""
  def box_sum(y):
    return jax.lax.reduce_window(y, 0.0, jax.lax.add, (1, window, window, 1), (1, 1, 1, 1),
                                 "SAME")
  return box_sum(x) / box_sum(jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype))


class CostVolumeNet(nnx.Module):
  """A video net that sees where each frame's content moved since the previous frame.

  `[M, V, H, W, C]` clips -> per frame:
  1. the grey picture, locally normalised (minus its mean, over its standard
     deviation, in `window`-pixel neighbourhoods): brightness and contrast drop out;
  2. its cost volume against the previous frame (FlowNetC's correlation
     layer): for each displacement d with |d_x|, |d_y| <= `max_shift`, the
     product of the previous frame at x and this one at x + d, averaged
     over a `window` neighbourhood. `(2 max_shift + 1)^2` channels per pixel,
     largest at the displacement the content around x moved by; the first
     frame is compared with itself (no motion);
  3. strided 3x3 convs (ReLU) and a mean over space, 1-D convs over frames
     (ReLU) and a linear layer to `out_channels`.
  What a picture looks like reaches it only through how well the picture
  matches itself displaced; which way it moved, and when, is kept, so a
  player's up-stroke and its recoil differ.
  """

  def __init__(self, *, max_shift: int = 2, window: int = 5, widths: tuple[int, int] = (16, 32),
               temporal_kernel: int = 3, out_channels: int = 64, rngs: nnx.Rngs):
    if max_shift < 1 or window < 1:
      raise ValueError(f"cost-volume net max_shift={max_shift}, window={window}: "
                       "expected both >= 1")
    if temporal_kernel < 1 or temporal_kernel % 2 == 0:
      raise ValueError(f"cost-volume net temporal_kernel={temporal_kernel}: "
                       "expected an odd width >= 1")
    self.max_shift, self.window = max_shift, window
    chans = ((2 * max_shift + 1) ** 2,) + tuple(widths)
    self.convs = nnx.List([nnx.Conv(a, b, (3, 3), strides=2, padding="SAME", rngs=rngs)
                           for a, b in zip(chans[:-1], chans[1:])])
    self.temporal = nnx.Conv(chans[-1], chans[-1], (temporal_kernel,), padding="SAME",
                             rngs=rngs)
    self.head = nnx.Linear(chans[-1], out_channels, rngs=rngs)
    self.out_channels = out_channels

  def cost_volume(self, clips):
    """`[M, V, H, W, C]` -> `[M, V, H, W, (2r + 1)^2]` (displacements row-major, dy outer)."""
    m, v, h, w = clips.shape[:4]
    grey = clips.mean(-1).reshape(m * v, h, w, 1)
    centred = grey - _box_mean(grey, self.window)
    spread = jnp.sqrt(_box_mean(centred ** 2, self.window) + 1e-6)
    norm = (centred / spread).reshape(m, v, h, w)
    prev = jnp.concatenate([norm[:, :1], norm[:, :-1]], axis=1)      # frame 0 against itself
    r = self.max_shift
    padded = jnp.pad(norm, ((0, 0), (0, 0), (r, r), (r, r)))
    products = [prev * padded[:, :, r + dy:r + dy + h, r + dx:r + dx + w]
                for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    volume = jnp.stack(products, -1).reshape(m * v, h, w, -1)
    return _box_mean(volume, self.window).reshape(m, v, h, w, -1)

  def __call__(self, clips, pool_time: bool = True):
    """`[M, V, H, W, C]` -> `[M, out_channels]`, or per frame `[M, V, out_channels]`."""
    if clips.ndim != 5:
      raise ValueError(f"video net input {clips.shape}: expected [M, T, H, W, C] clips")
    m, v = clips.shape[:2]
    x = self.cost_volume(clips)
    x = x.reshape((m * v,) + x.shape[2:])
    for conv in self.convs:
      x = jax.nn.relu(conv(x))
    x = jax.nn.relu(self.temporal(x.mean((1, 2)).reshape(m, v, -1)))
    x = self.head(x)
    return x.mean(1) if pool_time else x


class SeCo(nnx.Module):
  """`{mix_mag, frames}` -> mask logits `[1, B, N, F, T]` and the consistency features."""

  def __init__(self, *, num_channels: int = 64, unet: dict | None = None,
               video: dict | None = None, sync_net: dict | None = None,
               per_frame_weights: bool = False, frame_input: str = "frames",
               motion_channels: int = 0, video_net: str = "fast",
               centre_frame_features: bool = False, rngs: nnx.Rngs):
    """Builds the model.

    Args:
      num_channels: K, the U-Net's output features (SeCo: 64).
      per_frame_weights: False (the original): the video vector, pooled over
        the clip, gives one set of K channel weights for the whole segment.
        True: each frame's features (pooled over space only) give K weights
        for that frame's time span, linearly interpolated to the spectrogram's
        frames, so a source's mask can follow its player's motion in time.
        The consistency losses still see the clip-pooled vector.
      frame_input: 'frames' (the original) or 'differences': the video net
        sees each frame minus the one before (zeros for the first), so a
        still picture gives nothing and what moves is what it sees.
      motion_channels: 0 (the original): the U-Net sees the mixture alone and
        one pass serves every source. M > 0: each source's per-frame video
        features go through a linear layer to M values per frame, which are
        interpolated to the spectrogram's frames, tiled over frequency and
        given to the U-Net next to the mixture's log magnitude; the U-Net runs
        once per source, so its features can follow when that source's player
        moves (N times the U-Net's cost).
      video_net: 'fast' (the original's FastNet, `motion.FastPathway`),
        'energy' (`MotionEnergyNet`: only how much each half of the picture
        moves per frame) or 'cost_volume' (`CostVolumeNet`: where the
        picture's content moved since the previous frame); `frame_input`
        applies to 'fast' only.
      centre_frame_features: with per-frame features (`per_frame_weights` or
        `motion_channels`), subtract each clip's mean over frames before they
        set channel weights or motion maps: a still player then gives every
        source the same masks, and only when a player moves can tell sources
        apart. The consistency losses still see the clip mean.
      unet: `AudioUNet` arguments other than the channel counts.
      video: arguments of the video net; its output length is the
        consistency features' length D.
      sync_net: `VisualEncoder` arguments of the spectrogram net (one input
        channel, output D).
    """
    if motion_channels < 0:
      raise ValueError(f"model.motion_channels={motion_channels}: expected >= 0")
    self.unet = unet_lib.AudioUNet(1 + motion_channels, num_channels, **(unet or {}),
                                   rngs=rngs)
    if video_net == "fast":
      self.video = motion_lib.FastPathway(**(video or {}), rngs=rngs)
    elif video_net == "energy":
      self.video = MotionEnergyNet(**(video or {}), rngs=rngs)
    elif video_net == "cost_volume":
      self.video = CostVolumeNet(**(video or {}), rngs=rngs)
    else:
      raise ValueError(f"model.video_net={video_net!r}: expected 'fast', 'energy' or "
                       "'cost_volume'")
    self.video_net = video_net
    self.centre_frame_features = centre_frame_features
    dim = self.video.out_channels
    self.motion_channels = motion_channels
    self.motion_proj = (nnx.Linear(dim, motion_channels, rngs=rngs) if motion_channels
                        else None)
    self.visual_proj = nnx.Linear(dim, num_channels, use_bias=False, rngs=rngs)
    # SoP's synthesizer: scale starts at 1, bias at 0.
    self.synth_scale = nnx.Param(jnp.ones((num_channels,), jnp.float32))
    self.synth_bias = nnx.Param(jnp.zeros((), jnp.float32))
    self.sync_net = visual_lib.VisualEncoder(dim, in_channels=1, **(sync_net or {}), rngs=rngs)
    self.per_frame_weights = per_frame_weights
    if frame_input not in ("frames", "differences"):
      raise ValueError(f"model.frame_input={frame_input!r}: expected 'frames' or 'differences'")
    self.frame_input = frame_input

  def _embed(self, log_maps):
    """Spectrogram features: log-magnitude maps `[B, N, F, T]` -> `[B, N, D]`."""
    return self.sync_net(log_maps[..., None])

  def __call__(self, inputs: dict) -> dict:
    """Mask logits and the consistency features.

    Args:
      inputs: `mix_mag` `[B, F, T]` warped mixture magnitude, `frames`
        `[B, N, K', H, W, 3]` each source's clip; for training also
        `source_mag` and `companion_mag` `[B, N, F, T]` (another clip of each
        source's class).

    Returns:
      `mask_logits` `[1, B, N, F, T]`, `vision_feat` and `audio_sep_feat`
      `[B, N, D]`, and with the training inputs `audio_gt_feat`,
      `audio_temp_feat` `[B, N, D]`.
    """
    if "frames" not in inputs:
      raise ValueError("SeCo reads each source's frame clip: set dataset.frame_rate "
                       "(or dataset.num_frames)")
    frames = inputs["frames"]
    b, n = frames.shape[:2]
    log_mix = masks_lib.log_magnitude(inputs["mix_mag"])                # [B, F, T]
    num_f, num_t = log_mix.shape[1:]
    clips = frames.reshape((b * n,) + frames.shape[2:])
    if self.frame_input == "differences" and self.video_net == "fast":
      clips = jnp.diff(clips, axis=1, prepend=clips[:, :1])
    per_frame = None
    if self.per_frame_weights or self.motion_channels:
      per_frame = self.video(clips, pool_time=False).reshape(b, n, frames.shape[2], -1)
      vision = per_frame.mean(axis=2)                                  # [B, N, D]
      if self.centre_frame_features:  # only when, not how much: the clip's mean goes
        per_frame = per_frame - vision[:, :, None]
    else:
      vision = self.video(clips).reshape(b, n, -1)
    if self.motion_channels:
      motion = frames_to_spectrogram_time(self.motion_proj(per_frame), num_t)  # [B, N, T, M]
      maps = jnp.concatenate([
          jnp.broadcast_to(log_mix[:, None, :, :, None], (b, n, num_f, num_t, 1)),
          jnp.broadcast_to(motion[:, :, None], (b, n, num_f, num_t, self.motion_channels))],
                             axis=-1)
      features = self.unet(maps.reshape((b * n, num_f, num_t, -1)))
      features = features.reshape((b, n) + features.shape[1:])         # [B, N, F, T, K]
      feature_axes = "bnftk"
    else:
      features = self.unet(log_mix[..., None])                         # [B, F, T, K]
      feature_axes = "bftk"
    if self.per_frame_weights:
      weights = jax.nn.sigmoid(self.visual_proj(per_frame)) * self.synth_scale[...]
      weights = frames_to_spectrogram_time(weights, num_t)             # [B, N, T, K]
      weight_axes = "bntk"
    else:
      weights = jax.nn.sigmoid(self.visual_proj(vision)) * self.synth_scale[...]  # [B, N, K]
      weight_axes = "bnk"
    logits = (jnp.einsum(f"{feature_axes},{weight_axes}->bnft", features, weights)
              + self.synth_bias[...])
    out = {"mask_logits": logits[None], "vision_feat": vision,
           "audio_sep_feat": self._embed(log_mix[:, None] * jax.nn.sigmoid(logits))}
    if "source_mag" in inputs:
      out["audio_gt_feat"] = self._embed(masks_lib.log_magnitude(inputs["source_mag"]))
    if "companion_mag" in inputs:
      out["audio_temp_feat"] = self._embed(masks_lib.log_magnitude(inputs["companion_mag"]))
    return out
