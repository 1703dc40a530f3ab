"""Evaluation on the protocol's fixed mixture lists, from a model or an Orbax checkpoint.

For each N in `eval.num_mix`, the saved list of test mixtures (every class
combination x `eval.per_combination`; see `avsep_jax.data.eval_mixture_list`)
is separated by the model in one jitted function (front end, model in
inference mode, masks -> waveforms for every step of the model) and scored
with BSS-eval (`avsep_jax.metrics`, or mir_eval 0.8.2 with
`eval.metric_backend='mir_eval'`). `eval.window` says what is scored:

- 'centre': the listed centre segment of `eval.segment_length` samples;
- 'sliding': the full clips (as long as the mixture's shortest clip), cut into
  windows of `eval.segment_length` samples every `eval.window_hop` samples
  with the last window aligned to the clip's end (Co-Separation's and CRN's
  test), each window separated with its own object crops and frames, and the
  windows' estimates averaged where they overlap.

Either way:

- a mixture with a silent reference (sum |x| <= 1e-5) is skipped and counted
  under `skipped`;
- a silent estimate is scored 0 dB SDR/SIR/SAR and counted under
  `silent_estimates` (IAL-CMS's convention; SoP skipped them, which flatters);
- SDR of the unprocessed mixture (as every source's estimate) gives SDRi.

With `eval.duet_split` set, that split's examples (duets: one clip, two
players, their separate audio kept) are scored too, each duet one mixture of
its own two sources (its centre segment, or its full clip with 'sliding'),
each source queried by its own detection box.

Writes `workdir/eval/<split>_<N>mix.json` (e.g. `test_2mix`, `duet_2mix`;
overall `sdr`, `sir`, `sar`, `sdr_mixture`, `sdri`, `count`, `skipped`,
`silent_estimates`, `per_class`,
and `per_step` for models with refinement steps) and a Markdown table beside it;
for each `eval.frame_controls` entry, the list scored again with its frame
clips altered (`control_frames`; e.g. `test_2mix_frames_rolled`, the same keys
and `frame_control`); and `workdir/eval/report/index.html` (`avsep_jax.report`):
the tables, then `eval.report_samples` mixtures of each list with their crops,
spectrograms and audio.

With several processes (`jax.distributed`), every process walks the same
lists; each batch is one global array over all devices, the estimates are
gathered to every process, each scores every P-th mixture and the scores are
gathered; process 0 writes the files. Workdirs may be `gs://` paths.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from avsep_jax import audio
from avsep_jax import data
from avsep_jax import files
from avsep_jax import metrics
from avsep_jax import models
from avsep_jax import report as report_lib
from avsep_jax import train

METRICS = ("sdr", "sir", "sar")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _separate(graphdef, config_json: str, state, batch):
  """Estimates of every step `[S, B, N, L]`, each source's share and the mixture."""
  config = ml_collections.ConfigDict(json.loads(config_json))
  shares, mixture, features = train.front_end(config, batch["sources"], batch["source_mask"],
                                              with_targets=False)
  return shares, mixture, _estimates(config, graphdef, state, batch, features, mixture.shape[-1])


@functools.partial(jax.jit, static_argnums=(0, 1))
def separate_mixture(graphdef, config_json: str, state, batch):
  """Estimates of every step `[S, B, N, L]` of `batch["mixture"]` `[B, L]`, each source
  asked for by the batch's `crops` (and `frames`), `source_mask` `[B, N]`."""
  config = ml_collections.ConfigDict(json.loads(config_json))
  features = train.mixture_features(config, batch["mixture"])
  return _estimates(config, graphdef, state, batch, features, batch["mixture"].shape[-1])


def _estimates(config, graphdef, state, batch, features, length: int):
  """The model (inference mode) on the batch's queries: every step's waveforms."""
  model = nnx.view(nnx.merge(graphdef, state), use_running_average=True,
                   raise_if_not_found=False)
  outputs = models.layers.float32_outputs(model(train.model_inputs(batch, features["mix_mag"])))
  if "masks" in outputs:                                               # IAL-CMS: >= 0
    masks = outputs["masks"]                                           # [S, B, N, F, T]
  else:
    masks = jax.nn.sigmoid(outputs["mask_logits"])
  if evaluation_mask(config) == "binary":
    masks = binary_masks(masks, batch["source_mask"], config.eval.mask_threshold,
                         config.eval.mask_argmax)
  return audio.masks_to_waveforms(masks, features["mix_spec"], length,
                                  hop_length=config.audio.hop_length,
                                  align_corners=config.audio.align_corners)


def evaluation_mask(config) -> str:
  """The masks applied at evaluation, 'ratio' or 'binary': `eval.mask`, where it is
  'as_trained' the training targets' kind (`audio.mask`)."""
  return config.audio.mask if config.eval.mask == "as_trained" else config.eval.mask


def binary_masks(masks, source_mask, threshold: float, argmax: bool):
  """0/1 masks `[S, B, N, F, T]` from mask probabilities: above `threshold`, and
  with `argmax` only in the bins where the source's mask is the largest of the
  mixture's valid sources (`source_mask` `[B, N]`; the thesis' duet rule).
  """
  keep = masks > threshold
  if argmax:
    ranked = jnp.where(source_mask[None, :, :, None, None], masks, -1.0)
    keep &= ranked == ranked.max(axis=2, keepdims=True)
  return keep.astype(masks.dtype)


def _bss_eval(reference: np.ndarray, estimate: np.ndarray, backend: str):
  """`(sdr, sir, sar)` `[B, N]`; NaN rows where a reference is silent.

  With several processes each scores every P-th mixture and the rows are
  gathered, so every process returns the whole result.
  """
  count, me = jax.process_count(), jax.process_index()
  if count == 1:
    return _bss_eval_rows(reference, estimate, backend)
  local = np.full((3,) + reference.shape[:2], np.nan)
  if len(reference[me::count]):
    local[:, me::count] = np.stack(_bss_eval_rows(reference[me::count], estimate[me::count],
                                                  backend))
  every = multihost_utils.process_allgather(local)                  # [P, 3, B, N]
  out = np.empty_like(local)
  for process in range(count):
    out[:, process::count] = every[process][:, process::count]
  return tuple(out)


def _bss_eval_rows(reference: np.ndarray, estimate: np.ndarray, backend: str):
  if backend == "jax":
    return tuple(np.asarray(m) for m in metrics.bss_eval_sources(reference, estimate))
  if backend != "mir_eval":
    raise ValueError(f"eval.metric_backend={backend!r}: expected 'jax' or 'mir_eval'")
  import mir_eval  # pylint: disable=g-import-not-at-top
  out = np.full((3,) + reference.shape[:2], np.nan)
  for b in range(reference.shape[0]):
    if np.asarray(metrics.is_silent(reference[b])).any():
      continue  # mir_eval raises on silent references; the protocol skips them
    out[:, b] = mir_eval.separation.bss_eval_sources(reference[b], estimate[b],
                                                     compute_permutation=False)[:3]
  return tuple(out)


def _lists_dir(config) -> epath.Path:
  if config.eval.list_dir:
    return epath.Path(config.eval.list_dir)
  return epath.Path(config.dataset.data_dir or data.prepare.default_data_dir()) / "eval_lists"


def class_names(config) -> list[str]:
  """The dataset's class names (from its TFDS metadata, read once per dataset)."""
  return list(_class_names(config.dataset.name, config.dataset.data_dir))


@functools.lru_cache(maxsize=8)
def _class_names(name: str, data_dir: str | None) -> tuple[str, ...]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tuple(tfds.builder(name, data_dir=data_dir).info.features["labels"].feature.names)


def window_starts(length: int, window: int, hop: int) -> list[int]:
  """Starts of `window`-sample windows every `hop` samples over `length` samples.

  The last window ends at the clip's end (it may overlap its neighbour by more
  than the others); a clip shorter than one window gets one window at 0.
  """
  if hop < 1:
    raise ValueError(f"eval.window_hop={hop} must be >= 1")
  if length <= window:
    return [0]
  starts = list(range(0, length - window, hop))
  return starts + [length - window]


def _sliding_batches(source, index, specs, options: data.MixOptions, hop: int):
  """One batch per listed mixture over its full clips: the windows, and where they go.

  Yields `(windows, starts, full)`: `windows` the batch of the mixture's
  windows (each read with its own crops/frames), `starts` their first samples,
  `full` the mixture read whole (`[1, N, L]` sources, L its shortest clip).
  """
  source = data.CachedSource(source, 256 << 20)  # each clip is read once per window
  for spec in specs:
    length = min(index.lengths[i] for i in spec.indices)
    full = data.mixtures.finish(data.mixtures.read_mixture(
        source, data.MixtureSpec(spec.indices, (0,) * len(spec.indices)),
        segment_length=length, crop_size=options.crop_size, num_frames=0))
    starts = window_starts(length, options.segment_length, hop)
    reads = [options.read(source, data.MixtureSpec(spec.indices, (start,) * len(spec.indices)))
             for start in starts]
    windows = data.mixtures.finish({k: np.stack([r[k] for r in reads]) for k in reads[0]})
    yield windows, starts, {k: v[None] for k, v in full.items()}


def _overlap_average(estimates, starts: list[int], length: int):
  """Window estimates `[S, K, N, W]` -> `[S, 1, N, length]`, averaged where they overlap."""
  width = estimates.shape[-1]
  total = np.zeros(estimates.shape[:1] + estimates.shape[2:3] + (length,), estimates.dtype)
  count = np.zeros(length, estimates.dtype)
  for k, start in enumerate(starts):
    stop = min(start + width, length)
    total[..., start:stop] += estimates[:, k, :, :stop - start]
    count[start:stop] += 1
  return (total / count)[:, None]


def control_frames(frames: np.ndarray, control: str) -> np.ndarray:
  """Frame clips `[B, N, T, H, W, C]` altered for a control run (`eval.frame_controls`).

  'rolled': each source's clip rolled in time by T // 2 frames (circularly): the
  same pictures and the same motion, out of step with the audio. What a model
  loses then is what it gets from *when* each player moves.
  """
  if control == "rolled":
    return np.roll(frames, frames.shape[2] // 2, axis=2)
  raise ValueError(f"eval.frame_controls: {control!r} is not one of {train.FRAME_CONTROLS}")


def _mixture_list(config, split: str, num_mix: int, per_combination: int, duets: bool):
  """`(source, index, specs, options)` of a split's fixed evaluation list (or its duets)."""
  d, e = config.dataset, config.eval
  source, index = data.open_indexed_split(d.name, split, d.data_dir)
  if duets:
    specs = data.multi_source_specs(index, e.segment_length)
  else:
    subset = tuple(e.class_subset) or None
    path = data.eval_list_path(_lists_dir(config), d.name, split, num_mix,
                               segment_length=e.segment_length,
                               per_combination=per_combination, seed=e.list_seed,
                               class_subset=subset)
    specs = data.eval_mixture_list(path, index, num_mix, e.segment_length, seed=e.list_seed,
                                   per_combination=per_combination, class_subset=subset)
  options = data.MixOptions(num_mix=num_mix, segment_length=e.segment_length,
                            crop_size=d.crop_size, num_frames=d.num_frames,
                            frame_size=d.frame_size, frame_rate=d.frame_rate)
  return source, index, specs, options


def _separator(config, model: nnx.Module, mesh: train.Mesh):
  """`batch -> (shares [B, N, L], mixture [B, L], estimates [S, B, N, L])` on the mesh
  (a batch not divisible by the devices is padded, then cut back)."""
  graphdef, state = nnx.split(model)
  config_json = config.to_json()

  def separate(batch):
    (shares, mixture, estimates), size = on_mesh(
        lambda inputs: _separate(graphdef, config_json, state, inputs), batch, mesh)
    return shares[:size], mixture[:size], estimates[:, :size]

  return separate


def on_mesh(fn, batch: dict, mesh: train.Mesh):
  """`(fn's result as numpy on every process, the batch's row count)` for a numpy batch
  every process holds whole. Rows are padded (repeating the last) to a multiple of the
  devices; the caller cuts the result back to the row count."""
  size = len(next(iter(batch.values())))
  pad = -size % jax.device_count()
  batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) if pad else v
           for k, v in batch.items()}
  return fetch(fn(put_global(batch, mesh))), size


def put_global(batch: dict, mesh: train.Mesh) -> dict:
  """A batch every process holds whole -> global arrays sharded over `data` (each process
  places the rows of its own devices; one process: a plain `device_put`)."""
  if jax.process_count() == 1:
    return jax.device_put(batch, mesh.batch)
  return {k: jax.make_array_from_callback(np.shape(v), mesh.batch,
                                          lambda index, v=v: np.asarray(v)[index])
          for k, v in batch.items()}


def fetch(tree):
  """Global arrays -> numpy, whole on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def score_split(config, model: nnx.Module, mesh: train.Mesh, *, split: str, num_mix: int,
                per_combination: int = 1, duets: bool = False,
                frame_control: str | None = None) -> dict[str, Any]:
  """Separates and scores the fixed list of `split`'s `num_mix`-mixtures.

  Args:
    config: the experiment.
    model: the separator.
    mesh: devices.
    split: the split the mixtures come from.
    num_mix: sources per mixture.
    per_combination: mixtures per class combination in the list.
    duets: instead of the list, each example of `split` is one mixture of its
      own `num_mix` separate sources (a duet), scored against them.
    frame_control: None, or a control run: each batch's frame clips altered by
      `control_frames` before separation (the audio and the scoring as without).

  Returns:
    The summary (see the module docstring) with per-step and per-class parts.
  """
  e = config.eval
  source, index, specs, options = _mixture_list(config, split, num_mix, per_combination, duets)
  separate = _separator(config, model, mesh)
  if frame_control is not None:
    plain = separate
    separate = lambda batch: plain({**batch, "frames": control_frames(batch["frames"],
                                                                      frame_control)})

  if e.window == "centre":
    batches = ((batch, *separate(batch))
               for batch in data.eval_dataset(source, specs, options, batch_size=e.batch_size))
  else:
    def sliding():
      for windows, starts, full in _sliding_batches(source, index, specs, options,
                                                    e.window_hop):
        estimates = np.concatenate([separate({k: v[i:i + e.batch_size]
                                              for k, v in windows.items()})[2]
                                    for i in range(0, len(starts), e.batch_size)], axis=1)
        length = full["sources"].shape[-1]
        count = np.maximum(full["source_mask"].sum(-1), 1)[:, None, None]
        shares = full["sources"] * full["source_mask"][..., None] / count  # SoP: sum / N
        yield full, shares, shares.sum(1), _overlap_average(estimates, starts, length)
    batches = sliding()

  rows = []  # per batch: labels [B, N], sdr/sir/sar [S, B, N], sdr_mix [B, N], silent [S, B, N]
  for batch, shares, mixture, estimates in batches:
    size = len(batch["labels"])
    sdr_mix = _bss_eval(shares, np.broadcast_to(mixture[:, None], shares.shape),
                        e.metric_backend)[0]
    steps = [_bss_eval(shares, est, e.metric_backend) for est in estimates]
    silent = np.asarray(metrics.is_silent(estimates))                  # [S, B, N]
    scores = np.stack([np.stack(s) for s in steps])                    # [S, 3, B, N]
    scores = np.where(silent[:, None], 0.0, scores)                    # protocol: 0 dB
    rows.append((np.asarray(batch["labels"])[:size], scores, sdr_mix, silent))
  labels = np.concatenate([r[0] for r in rows])
  scores = np.concatenate([r[1] for r in rows], axis=2)               # [S, 3, M, N]
  sdr_mix = np.concatenate([r[2] for r in rows])                       # [M, N]
  silent = np.concatenate([r[3] for r in rows], axis=1)               # [S, M, N]
  valid = ~(np.isnan(sdr_mix).any(1) | np.isnan(scores).any((0, 1, 3)))  # silent references
  names = class_names(config)

  def summary(step_scores, keep):  # step_scores [3, M, N], keep [M, N]
    out = {m: float(np.mean(step_scores[i][keep])) for i, m in enumerate(METRICS)}
    out["sdr_mixture"] = float(np.mean(sdr_mix[keep]))
    out["sdri"] = float(np.mean(step_scores[0][keep] - sdr_mix[keep]))
    return out

  final = scores[-1]
  all_sources = np.broadcast_to(valid[:, None], labels.shape)
  result = {"split": split, "num_mix": num_mix, "frame_control": frame_control,
            **summary(final, all_sources),
            "count": int(valid.sum()), "skipped": int((~valid).sum()),
            "silent_estimates": int(silent[-1][valid].sum()),
            "metric_backend": e.metric_backend, "masks": evaluation_mask(config)}
  per_class = {}
  for c in np.unique(labels[valid]):
    keep = valid[:, None] & (labels == c)
    per_class[names[c] if c < len(names) else str(c)] = {**summary(final, keep),
                                                         "count": int(keep.sum())}
  result["per_class"] = per_class
  if len(scores) > 1:
    result["per_step"] = [{"step": s, **summary(scores[s], all_sources)}
                          for s in range(len(scores))]
  return result


def report_samples(config, model: nnx.Module, mesh: train.Mesh, *, split: str, num_mix: int,
                   per_combination: int = 1, duets: bool = False, count: int = 3
                   ) -> list[report_lib.SampleView]:
  """`count` mixtures of the list `score_split` scores (evenly spread over it), separated
  on their centre segment, as report samples: crops, truths, every step's estimate."""
  e = config.eval
  source, _, specs, options = _mixture_list(config, split, num_mix, per_combination, duets)
  picks = sorted(set(np.linspace(0, len(specs) - 1, min(count, len(specs))).round().astype(int)))
  separate = _separator(config, model, mesh)
  names = class_names(config)
  group = f"{split}: duets" if duets else f"{split}: {num_mix}-mix"
  samples = []
  for batch in data.eval_dataset(source, [specs[i] for i in picks], options,
                                 batch_size=e.batch_size):
    shares, mixture, estimates = separate(batch)
    scores = np.stack(_bss_eval(shares, estimates[-1], e.metric_backend))   # [3, B, N]
    pictures = query_pictures(batch)
    for b in range(len(shares)):
      views = []
      for n in np.flatnonzero(batch["source_mask"][b]):
        label = int(batch["labels"][b, n])
        views.append(report_lib.SourceView(
            name=names[label] if label < len(names) else str(label),
            estimates=list(estimates[:, b, n]), pictures=pictures(b, n), reference=shares[b, n],
            scores=dict(zip(METRICS, scores[:, b, n].tolist()))))
      title = " + ".join(v.name for v in views)
      samples.append(report_lib.SampleView(group, f"{len(samples) + 1}. {title}", mixture[b],
                                           views))
  return samples


def query_pictures(batch):
  """`(b, n) -> [(caption, uint8 picture)]`: the crop and, when the batch has frame
  clips, their middle frame, as the model was shown them (`batch` normalised)."""
  crops = data.mixtures.denormalise_images(batch["crops"])
  frames = batch.get("frames")
  middle = None if frames is None else data.mixtures.denormalise_images(
      frames[:, :, frames.shape[2] // 2])

  def pictures(b, n):
    out = [("object crop", crops[b, n])]
    return out if middle is None else out + [("middle frame", middle[b, n])]

  return pictures


def validation_sdr(config, model: nnx.Module, mesh: train.Mesh) -> dict[str, float]:
  """Mean SDR and SDRi on the validation list (N = eval.validation_num_mix), for training logs."""
  result = score_split(config, model, mesh, split=config.dataset.validation_split,
                       num_mix=config.eval.validation_num_mix,
                       per_combination=config.eval.validation_per_combination)
  return {"sdr": result["sdr"], "sdri": result["sdri"]}


def markdown(result: dict[str, Any]) -> str:
  """A Markdown report of one summary: overall, per step, per class."""
  head = "| | SDR | SIR | SAR | SDR mixture | SDRi | count |\n|---|---|---|---|---|---|---|\n"

  def row(name, r, count):
    return (f"| {name} | {r['sdr']:.2f} | {r['sir']:.2f} | {r['sar']:.2f} | "
            f"{r['sdr_mixture']:.2f} | {r['sdri']:.2f} | {count} |\n")

  text = (f"# {report_lib.table_title(result)} (dB, mean over sources and "
          f"mixtures; checkpoint step {result.get('checkpoint_step')})\n\n"
          f"{result['count']} mixtures scored, {result['skipped']} skipped (silent reference), "
          f"{result['silent_estimates']} silent estimates scored 0 dB; metric: "
          f"{result['metric_backend']}.\n\n" + head + row("all", result, result["count"]))
  if "per_step" in result:
    text += "\n## Per refinement step\n\n" + head + "".join(
        row(f"step {r['step']}", r, result["count"]) for r in result["per_step"])
  text += "\n## Per class\n\n" + head + "".join(
      row(name, r, r["count"]) for name, r in result["per_class"].items())
  return text


def evaluate_and_report(config, workdir: str | pathlib.Path, model: nnx.Module,
                        mesh: train.Mesh, *, step: int | None = None) -> dict[str, Any]:
  """Scores every `eval.num_mix` on the test split; writes JSON and Markdown; prints a table."""
  out_dir = epath.Path(workdir) / "eval"
  out_dir.mkdir(parents=True, exist_ok=True)
  e = config.eval
  results, samples = {}, []
  split = config.dataset.test_split
  runs = [dict(split=split, num_mix=num_mix, per_combination=per_combination)
          for num_mix, per_combination in zip(config.eval.num_mix, config.eval.per_combination)]
  if config.eval.duet_split:
    runs.append(dict(split=config.eval.duet_split, num_mix=2, duets=True))
  for run in runs:
    if e.report_samples:  # every process: the separation is one program over all devices
      samples += report_samples(config, model, mesh, count=e.report_samples, **run)
    for control in (None, *e.get("frame_controls", ())):
      result = score_split(config, model, mesh, frame_control=control, **run)
      result["checkpoint_step"] = step
      name = f"{run['split']}_{run['num_mix']}mix" + (f"_frames_{control}" if control else "")
      if jax.process_index() == 0:
        data.mixtures.write_json_atomic(out_dir / f"{name}.json", result)
        files.write_text_atomic(out_dir / f"{name}.md", markdown(result))
      results[name] = result
      line = (f"{name}: SDR {result['sdr']:.2f}  SIR {result['sir']:.2f}  "
              f"SAR {result['sar']:.2f}  SDR mixture {result['sdr_mixture']:.2f}  "
              f"SDRi {result['sdri']:.2f} dB  ({result['count']} mixtures, "
              f"{result['skipped']} skipped)")
      if "per_step" in result:
        line += "\n  per step SDR: " + "  ".join(f"{r['sdr']:.2f}" for r in result["per_step"])
      print(line, flush=True)
  if e.report_samples and jax.process_index() == 0:
    index = report_lib.write_report(
        out_dir / "report", title=f"{config.model.name} on {config.dataset.name}",
        notes=[f"Checkpoint step {step}; workdir {workdir}.",
               f"Samples: {e.report_samples} per list, evenly spread over it; each is "
               f"its centre {e.segment_length}-sample segment (scores of that segment)."],
        tables=list(results.values()), samples=samples,
        options=report_lib.spectrogram_options(config))
    print(f"wrote {index}", flush=True)
  print(f"wrote {out_dir}/", flush=True)
  return results


def evaluate_checkpoint(config, workdir: str | pathlib.Path, step: int | None = None
                        ) -> dict[str, Any]:
  """Loads checkpoint `step` (default: the latest) of `workdir` and evaluates it."""
  model, mesh, step = load_checkpoint(config, workdir, step)
  return evaluate_and_report(config, workdir, model, mesh, step=step)


def load_checkpoint(config, workdir: str | pathlib.Path, step: int | None = None):
  """`(model, mesh, step)`: the model of checkpoint `step` (default: the latest) of
  `workdir`, replicated over the devices."""
  workdir = epath.Path(workdir)
  train.validate_config(config)
  mesh = train.Mesh()
  manager = train.checkpoint_manager(workdir, config)
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise FileNotFoundError(f"{workdir / 'checkpoints'}: no checkpoint "
                            f"{'at all' if step is None else f'at step {step}'}; "
                            f"steps saved: {list(manager.all_steps())}")
  graphdef, state, _ = train.init_state(config)
  state, _ = train.restore_state(manager, step, state, jax.random.key(config.seed),
                                model_name=config.model.name)
  state = mesh.replicate(state)
  return nnx.merge(graphdef, state).model, mesh, step
