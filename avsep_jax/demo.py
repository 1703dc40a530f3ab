"""Front-end demo on the embedded dataset: oracle-mask separation scored by BSS-eval.

Builds `synthetic_music` when it is not prepared yet (a progress bar per
split), takes the evaluation protocol's fixed test mixtures (every pair and
triple of classes, centre segments, saved as JSON under --out), and runs the
SoP audio path end to end without a model: STFT, log-frequency warp to 256
rows, ideal ratio and binary masks in the warped domain (what a model is
trained to predict), inverse warp, masked mixture magnitude with mixture phase,
iSTFT, and SDR/SIR/SAR/SDRi with `avsep_jax.metrics`. These oracle masks are
the ceiling a separation model on this front end can reach. Writes wavs, a
spectrogram figure and `results.json` under --out.

  python -m avsep_jax.demo --out=runs/demo [--data_dir=DIR] [--dataset=synthetic_music/small]
"""

from __future__ import annotations

import functools
import json
import pathlib

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from avsep_jax import audio
from avsep_jax import data
from avsep_jax import metrics

SAMPLE_RATE = 11025

_OUT = flags.DEFINE_string("out", "runs/demo", "Output directory.")
_DATASET = flags.DEFINE_string("dataset", "synthetic_music/small", "Dataset (name/config).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's own).")
_SPLIT = flags.DEFINE_string("split", "test", "Split the mixtures come from.")
_PER_COMBINATION = flags.DEFINE_list("per_combination", ["2", "1"],
                                     "Mixtures per class combination, for 2-mix then 3-mix.")
_LENGTH = flags.DEFINE_integer("length", 65535, "Samples per source segment (11025 Hz).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the mixture lists.")


@functools.partial(jax.jit, static_argnames="kind")
def separate_with_oracle_masks(sources, kind: str):
  """Oracle separation of `sources` `[B, N, L]` (already divided by N).

  Args:
    sources: per-source waveforms in the mixture.
    kind: "ratio" (clip to [0, 5]) or "binary" (source > half the mixture).

  Returns:
    `(mixture [B, L], estimates [B, N, L])`.
  """
  length = sources.shape[-1]
  mixture = sources.sum(1)
  mix_spec = audio.stft(mixture)                              # [B, 512, T]
  mix_warped = audio.log_freq_warp(jnp.abs(mix_spec))         # [B, 256, T]
  src_warped = audio.log_freq_warp(jnp.abs(audio.stft(sources)))  # [B, N, 256, T]
  if kind == "ratio":
    masks = audio.ratio_mask(src_warped, mix_warped[:, None])
  else:
    masks = audio.binary_mask(src_warped, mix_warped[:, None])
  estimates = audio.masks_to_waveforms(masks, mix_spec, length)  # unwarp, mask, iSTFT
  return mixture, estimates


def spectrogram_figure(path: pathlib.Path, mixture, sources, estimates) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = [("mixture", mixture)] + [(f"source {k}", s) for k, s in enumerate(sources)] + [
      (f"estimate {k}", e) for k, e in enumerate(estimates)]
  fig, axes = plt.subplots(len(rows), 1, figsize=(8, 2 * len(rows)), sharex=True)
  for ax, (name, wave) in zip(axes, rows):
    mag = np.asarray(audio.log_freq_warp(jnp.abs(audio.stft(jnp.asarray(wave)))))
    ax.imshow(20 * np.log10(mag + 1e-4), origin="lower", aspect="auto", vmin=-80, vmax=20,
              cmap="magma")
    ax.set_ylabel(name)
  axes[-1].set_xlabel("frame (hop 256 at 11025 Hz)")
  fig.suptitle("log-frequency magnitude (dB); oracle ratio masks")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main(argv):
  del argv
  import soundfile
  logging.set_verbosity(logging.WARNING)
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  data.prepare_dataset(_DATASET.value, _DATA_DIR.value)
  split, index = data.open_indexed_split(_DATASET.value, _SPLIT.value, _DATA_DIR.value)
  options = data.MixOptions(segment_length=_LENGTH.value, crop_size=32, num_frames=0)
  results = {}
  print(f"{'setting':<18} {'SDR':>7} {'SIR':>7} {'SAR':>7} {'SDRmix':>7} {'SDRi':>7} "
        f"{'count':>6} {'skipped':>8}  (dB, mean)")
  for num, per_combination in zip((2, 3), (int(v) for v in _PER_COMBINATION.value)):
    path = data.eval_list_path(out, _DATASET.value, _SPLIT.value, num,
                               segment_length=_LENGTH.value, per_combination=per_combination,
                               seed=_SEED.value)
    specs = data.eval_mixture_list(path, index, num, _LENGTH.value, seed=_SEED.value,
                                   per_combination=per_combination)
    scores = {"ratio": [], "binary": []}  # per batch: (sdr, sir, sar, sdr_mix)
    first = None
    for batch in data.eval_dataset(split, specs, options, batch_size=32):
      sources = batch["sources"] / num  # SoP mixes sum / N: each source's share
      mix_as_estimate = np.broadcast_to(sources.sum(1, keepdims=True), sources.shape)
      sdr_mix = np.asarray(metrics.bss_eval_sources(sources, mix_as_estimate)[0])
      for kind in scores:
        mixture, estimates = separate_with_oracle_masks(sources, kind)
        sdr, sir, sar = (np.asarray(m) for m in metrics.bss_eval_sources(sources, estimates))
        scores[kind].append((sdr, sir, sar, sdr_mix))
        valid = ~np.isnan(sdr).any(1)
        if kind == "ratio" and first is None and valid.any():
          k = int(np.flatnonzero(valid)[0])
          first = (np.asarray(mixture[k]), sources[k], np.asarray(estimates[k]))
    for kind, parts in scores.items():
      sdr, sir, sar, sdr_mix = (np.concatenate(p) for p in zip(*parts))
      valid = ~np.isnan(sdr).any(1)  # a mixture with a silent reference is skipped
      row = {"sdr": float(np.mean(sdr[valid])), "sir": float(np.mean(sir[valid])),
             "sar": float(np.mean(sar[valid])), "sdr_mixture": float(np.mean(sdr_mix[valid])),
             "sdri": float(np.mean((sdr - sdr_mix)[valid])),
             "count": int(valid.sum()), "skipped": int((~valid).sum())}
      name = f"{num}mix_{kind}"
      results[name] = row
      print(f"{name:<18} {row['sdr']:7.2f} {row['sir']:7.2f} {row['sar']:7.2f} "
            f"{row['sdr_mixture']:7.2f} {row['sdri']:7.2f} {row['count']:6d} {row['skipped']:8d}")
    mixture, sources, estimates = first
    soundfile.write(out / f"{num}mix_mixture.wav", mixture, SAMPLE_RATE)
    for k in range(num):
      soundfile.write(out / f"{num}mix_source{k}.wav", sources[k], SAMPLE_RATE)
      soundfile.write(out / f"{num}mix_estimate{k}.wav", estimates[k], SAMPLE_RATE)
    spectrogram_figure(out / f"{num}mix_spectrograms.png", mixture, sources, estimates)
  (out / "results.json").write_text(json.dumps(results, indent=2))
  print(f"wrote wavs, spectrograms, mixture lists and results.json to {out}/")


if __name__ == "__main__":
  app.run(main)
