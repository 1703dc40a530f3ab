"""SeCo: class folds, training on a fold's classes, consistency losses, held-out evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avsep_jax import data
from avsep_jax import evaluate
from avsep_jax import losses
from avsep_jax import train
from configs import seco
from test_train import module_changed
from test_train import synthetic_batch
from test_train import tiny_config


def one_step_trains(config, batch, names, init=None):
  """One jitted training step from `init` (`train.init_state(config)` by default).

  Asserts that every module in `names` changed and the loss is finite;
  returns `(state before, state after, metrics)`.
  """
  graphdef, state, schedules = init or train.init_state(config)
  step = jax.jit(train.make_train_step(graphdef, config, schedules["default"]))
  new, metrics = step(state, batch, jax.random.key(0))
  for name in names:
    assert module_changed(state, new, name), name
  assert np.isfinite(float(metrics["loss"]))
  return state, new, metrics


def test_folds_split_the_classes_disjointly_and_reproducibly():
  for fold in (1, 2, 3):
    train_classes, held_out = seco.fold_classes(21, 5, fold)
    assert len(held_out) == 5 and len(train_classes) == 16
    assert sorted(train_classes + held_out) == list(range(21))
    assert seco.fold_classes(21, 5, fold) == (train_classes, held_out)
  assert seco.fold_classes(21, 5, 1) != seco.fold_classes(21, 5, 2)
  config = seco.get_config("full,fold2")
  assert (tuple(config.dataset.train_classes), tuple(config.eval.class_subset)) == \
      seco.fold_classes(21, 5, 2)
  with pytest.raises(ValueError, match="expected \\[size\\]\\[,foldK\\]"):
    seco.get_config("foldx")


def test_training_mixtures_use_only_the_fold_s_classes(tiny_data_dir):
  config = tiny_config(tiny_data_dir, seco)
  config.train.batch_size = 8
  iterator = train.train_iterator(config)
  labels = np.concatenate([next(iterator)["labels"].ravel() for _ in range(3)])
  assert set(labels) <= set(config.dataset.train_classes)
  assert len(set(labels)) > 3
  config.dataset.train_classes = (0, 99)
  with pytest.raises(ValueError, match=r"classes \[99\] have no clip"):
    train.train_iterator(config)


def test_evaluation_scores_only_held_out_classes(tiny_data_dir):
  config = tiny_config(tiny_data_dir, seco, steps=1)
  graphdef, state, _ = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  result = evaluate.score_split(config, model, train.Mesh(), split="test", num_mix=2,
                                per_combination=1)
  names = evaluate.class_names(config)
  assert set(result["per_class"]) == {names[c] for c in config.eval.class_subset}
  assert result["count"] + result["skipped"] == 3  # C(3, 2) pairs x 1


def test_frame_control_scores_each_list_again_with_frames_out_of_step(tiny_data_dir, tmp_path):
  frames = np.arange(2 * 2 * 6).reshape(2, 2, 6, 1, 1, 1)
  rolled = evaluate.control_frames(frames, "rolled")
  np.testing.assert_array_equal(rolled[:, :, 3:], frames[:, :, :3])   # T // 2 = 3 later
  np.testing.assert_array_equal(rolled[:, :, :3], frames[:, :, 3:])

  config = tiny_config(tiny_data_dir, seco, steps=1)
  config.eval.num_mix, config.eval.per_combination = (2,), (1,)
  config.eval.report_samples = 0
  config.eval.frame_controls = ("rolled",)
  train.validate_config(config)
  graphdef, state, _ = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  results = evaluate.evaluate_and_report(config, tmp_path, model, train.Mesh(), step=0)
  assert set(results) == {"test_2mix", "test_2mix_frames_rolled"}
  plain, control = results["test_2mix"], results["test_2mix_frames_rolled"]
  assert (plain["frame_control"], control["frame_control"]) == (None, "rolled")
  assert control["count"] == plain["count"] == 3
  assert control["sdr_mixture"] == plain["sdr_mixture"]       # the same mixtures
  assert control["sdr"] != plain["sdr"]                       # other frames, other masks
  assert plain["masks"] == "ratio"                            # the CPU default's soft masks
  assert (tmp_path / "eval" / "test_2mix_frames_rolled.md").read_text().startswith(
      "# test, 2-mix, ratio masks, control: frames rolled")

  config.eval.frame_controls = ("shuffled",)
  with pytest.raises(ValueError, match=r"eval.frame_controls names \['shuffled'\]"):
    train.validate_config(config)
  config.eval.frame_controls = ("rolled",)
  config.dataset.frame_rate, config.dataset.num_frames = 0.0, 0
  with pytest.raises(ValueError, match="reads no frame clips"):
    train.validate_config(config)


def test_evaluation_mask_overrides_the_training_targets_kind(tiny_data_dir):
  config = tiny_config(tiny_data_dir, seco, steps=1)
  assert config.audio.mask == "binary"
  graphdef, state, _ = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  model_graphdef, model_state = nnx.split(model)
  batch = synthetic_batch(config, 2)
  batch["mixture"] = batch["sources"].sum(axis=1)

  def estimates(eval_mask, audio_mask="binary"):
    c = config.copy_and_resolve_references()
    c.eval.mask, c.audio.mask = eval_mask, audio_mask
    train.validate_config(c)
    return np.asarray(evaluate.separate_mixture(model_graphdef, c.to_json(), model_state, batch))

  as_trained, binary, soft = (estimates(m) for m in ("as_trained", "binary", "ratio"))
  np.testing.assert_array_equal(as_trained, binary)
  assert not np.allclose(soft, binary, atol=1e-4)
  # Soft masks at evaluation are what a model trained on ratio targets applies.
  np.testing.assert_array_equal(soft, estimates("as_trained", audio_mask="ratio"))
  np.testing.assert_array_equal(binary, estimates("binary", audio_mask="ratio"))
  config.eval.mask = "soft"
  with pytest.raises(ValueError, match=r"eval.mask='soft': expected 'as_trained' or one of"):
    train.validate_config(config)


def _features(rng, b, n, d):
  x = rng.normal(size=(b, n, d))
  return jnp.asarray(x)


def _l2(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_consistency_terms_follow_the_original_formulas():
  b, n, f, t, d = 3, 2, 8, 4, 6
  rng = np.random.default_rng(0)
  sep, vision, gt, temp = (np.asarray(_features(rng, b, n, d)) for _ in range(4))
  outputs = {"mask_logits": jnp.zeros((1, b, n, f, t)), "audio_sep_feat": sep,
             "vision_feat": vision, "audio_gt_feat": gt, "audio_temp_feat": temp}
  features = {"target": jnp.full((b, n, f, t), 1.0), "weight": jnp.ones((b, f, t))}
  batch = {"source_mask": jnp.ones((b, n), bool), "labels": jnp.zeros((b, n), jnp.int32)}
  kwargs = dict(mask="binary", weighted=True, sync_weight=0.01, temp_weight=0.01,
                sync_margin=1.0, gt_decay=0.9, gt_every=100.0, gt_floor=0.1)
  dist = lambda a, v: np.mean((_l2(a) - _l2(v)) ** 2, -1)          # [B, N]
  for step, negatives in ((0, "easy"), (1000, "same_class")):
    total, m = losses.seco_loss(outputs, features, batch, step=step, negatives=negatives,
                                **kwargs)
    g = max(0.1, 0.9 ** (step / 100))
    pos = dist(sep, vision).mean(0).sum() + g * dist(gt, vision).mean(0).sum()
    if negatives == "easy":   # each separated source against the other source's video
      neg = np.maximum(0, 1 - dist(sep, vision[:, ::-1])).mean(0).sum()
    else:
      neg = np.maximum(0, 1 - dist(temp, vision)).mean(0).sum()
    temp_pos = dist(temp, sep).mean(0).sum()
    temp_neg = np.maximum(0, 1 - np.mean((_l2(sep[:, 0]) - _l2(sep[:, 1])) ** 2, -1)).mean()
    np.testing.assert_allclose([m["sync_pos"], m["sync_neg"], m["temp_pos"], m["temp_neg"]],
                               [pos, neg, temp_pos, temp_neg], rtol=1e-5)
    mask_part = float(m["mask_loss/step_0"])
    np.testing.assert_allclose(mask_part, np.log(2.0), rtol=1e-5)   # logits 0, targets 1
    np.testing.assert_allclose(total, mask_part + 0.01 * (pos + neg + temp_pos + temp_neg),
                               rtol=1e-5)
  assert float(losses.seco_gt_ratio(100, decay=0.9, every=100, floor=0.1)) == pytest.approx(0.9)
  assert float(losses.seco_gt_ratio(10**5, decay=0.9, every=100, floor=0.1)) == pytest.approx(0.1)


def test_one_step_trains_all_but_the_frozen_spectrogram_net():
  config = seco.get_config("tiny,fast")
  batch = synthetic_batch(config, 2)
  assert batch["frames"].shape[2] == 12                # 16383 samples at 8 frames per second
  assert config.model.frame_input == "differences" and config.model.per_frame_weights
  assert batch["companions"].shape == batch["sources"].shape
  state, new, metrics = one_step_trains(config, batch,
                                        ("unet", "video", "visual_proj", "synth_scale"))
  assert not module_changed(state, new, "sync_net")   # never optimised, as the original
  for name in ("sync_pos", "sync_neg", "temp_pos", "temp_neg", "mask_loss/step_0"):
    assert np.isfinite(float(metrics[name])) and float(metrics[name]) > 0, name


def test_cpu_default_sees_only_motion_trains_on_same_class_mixtures_and_steps():
  config, fast = seco.get_config("tiny,fold2"), seco.get_config("tiny,fold2,fast")
  assert tuple(config.eval.class_subset) == tuple(fast.eval.class_subset)
  assert (config.model.video_net, config.model.centre_frame_features,
          config.model.motion_channels, config.dataset.same_class_fraction,
          config.eval.mask) == ("cost_volume", True, 4, 1.0, "ratio")
  assert (fast.model.video_net, fast.model.frame_input, fast.dataset.same_class_fraction,
          fast.eval.mask) == ("fast", "differences", 0.0, "as_trained")
  cpu = seco.get_config("fold2")
  assert (cpu.train.steps, tuple(cpu.train.decay_steps)) == (4200, (3900,))
  assert seco.get_config("fold2,fast").train.steps == 1400
  train.validate_config(cpu)
  one_step_trains(config, synthetic_batch(config, 2),
                  ("unet", "video", "visual_proj", "motion_proj"))
  with pytest.raises(ValueError, match="'fast' is a cpu and tiny option"):
    seco.get_config("full,fast")
  with pytest.raises(ValueError, match="'timing' choices are now the cpu and tiny defaults"):
    seco.get_config("fold2,timing")


def test_training_batches_hold_same_class_companions(tiny_data_dir):
  config = tiny_config(tiny_data_dir, seco)
  config.train.batch_size = 4
  batch = next(train.train_iterator(config))
  assert batch["companions"].shape == batch["sources"].shape
  source, index = data.open_indexed_split(config.dataset.name, "train", tiny_data_dir)
  by_class = index.by_class
  for row in range(4):
    for n, label in enumerate(batch["labels"][row]):
      segment = np.round(batch["companions"][row, n] * 32768).astype(np.int16)
      k = min(max(0, int(np.argmax(np.abs(segment))) - 32), len(segment) - 64)  # not silence
      head = segment[k:k + 64]
      found = any((np.lib.stride_tricks.sliding_window_view(
          np.asarray(source[i]["audio"], np.int16), 64) == head).all(1).any()
                  for i in by_class[int(label)])
      assert found, (row, n)          # a segment of a clip of the source's own class


def test_frames_to_spectrogram_time_interpolates_between_frame_middles():
  from avsep_jax.models import seco as seco_model
  ramp = jnp.arange(4.0)[:, None] * jnp.ones((1, 2))               # frame v holds v
  out = seco_model.frames_to_spectrogram_time(ramp, 9)               # STFT frames at 0, 1/8, ..
  np.testing.assert_allclose(out[:, 0], [0, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3], atol=1e-6)
  np.testing.assert_allclose(out[:, 1], out[:, 0])
  assert seco_model.frames_to_spectrogram_time(jnp.ones((2, 3, 5, 4)), 64).shape == (2, 3, 64, 4)


def test_per_frame_weights_follow_the_clip_in_time_and_train():
  config = seco.get_config("tiny,fast")            # per-frame weights at 8 frames/s
  batch = synthetic_batch(config, 2)
  assert batch["frames"].shape[2] == 12
  graphdef, state, schedules = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  frames = jnp.asarray(batch["frames"])
  b, n = frames.shape[:2]
  clips = frames.reshape((b * n,) + frames.shape[2:])
  per_frame = model.video(clips, pool_time=False)
  assert per_frame.shape == (b * n, 12, model.video.out_channels)
  # The consistency losses' clip vector is still the pooled video feature.
  np.testing.assert_allclose(per_frame.mean(1), model.video(clips), rtol=1e-5, atol=1e-6)
  one_step_trains(config, batch, ("unet", "video", "visual_proj", "synth_scale"),
                  (graphdef, state, schedules))


def test_frame_differences_ignore_what_stands_still():
  config = seco.get_config("tiny,fast")            # frame differences
  batch = synthetic_batch(config, 2)
  graphdef, state, _ = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  features = train.mixture_features(config, jnp.asarray(batch["sources"]).sum(1))
  rng = np.random.default_rng(1)
  stills = [np.broadcast_to(rng.normal(size=(2, 2, 1, 32, 32, 3)), batch["frames"].shape)
            for _ in range(2)]                            # two different still pictures
  moving = batch["frames"]
  outs = [model({"mix_mag": features["mix_mag"], "frames": jnp.asarray(f, jnp.float32)})
          for f in stills + [moving]]
  np.testing.assert_array_equal(outs[0]["vision_feat"], outs[1]["vision_feat"])
  np.testing.assert_array_equal(outs[0]["mask_logits"], outs[1]["mask_logits"])
  still, moved = np.asarray(outs[0]["vision_feat"]), np.asarray(outs[2]["vision_feat"])
  assert np.abs(moved - still).max() > 0.1 * np.abs(moved).max()
  config.model.frame_input = "flow"
  with pytest.raises(ValueError, match="model.frame_input='flow'"):
    train.init_state(config)


def test_motion_channels_give_each_source_its_own_unet_pass():
  config = seco.get_config("tiny,fast")
  config.model.motion_channels = 2
  batch = synthetic_batch(config, 2)
  graphdef, state, schedules = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  assert model.unet.down[0].kernel.shape[-2] == 3       # log mixture + 2 motion maps
  features = train.mixture_features(config, jnp.asarray(batch["sources"]).sum(1))
  frames = jnp.asarray(batch["frames"], jnp.float32)
  moved = frames.at[:, 1, 3:].add(0.5)                  # source 1's player moves later on
  outs = [model({"mix_mag": features["mix_mag"], "frames": f})["mask_logits"][0]
          for f in (frames, moved)]
  # Source 0's pass never sees source 1's frames; source 1's masks follow them.
  np.testing.assert_array_equal(outs[0][:, 0], outs[1][:, 0])
  assert np.abs(np.asarray(outs[0][:, 1] - outs[1][:, 1])).max() > 0
  one_step_trains(config, batch, ("unet", "video", "motion_proj", "visual_proj"),
                  (graphdef, state, schedules))
  config.model.motion_channels = -1
  with pytest.raises(ValueError, match="model.motion_channels=-1"):
    train.init_state(config)


def test_motion_energy_net_sees_when_and_where_a_picture_moves_not_what_it_is():
  from avsep_jax.models import seco as seco_model
  rng = np.random.default_rng(2)
  picture = rng.uniform(size=(1, 1, 32, 32, 3))
  clip = np.repeat(picture, 8, axis=1)
  clip[:, 5:, 16:] = np.roll(clip[:, 5:, 16:], 3, axis=3)     # the bottom half moves at frame 5
  stats = np.asarray(seco_model.MotionEnergyNet.stats(jnp.asarray(clip)))[0]
  assert stats.shape == (8, 5)
  moving = stats[:, 0] > 0
  assert moving.tolist() == [False] * 5 + [True] + [False] * 2
  assert stats[5, 2] > 0 and stats[5, 1] == 0                 # bottom half, not top
  # Brightness and contrast (and so most of what the picture is) drop out.
  np.testing.assert_allclose(seco_model.MotionEnergyNet.stats(jnp.asarray(3 * clip + 0.2)),
                             stats[None], rtol=1e-4, atol=1e-5)
  config = seco.get_config("tiny,fast")
  config.model.video_net = "energy"
  config.model.video = dict(widths=(4,), out_channels=8)
  config.model.motion_channels = 1
  one_step_trains(config, synthetic_batch(config, 2),
                  ("unet", "video", "motion_proj", "visual_proj"))
  config.model.video_net = "optical_flow"
  with pytest.raises(ValueError, match="model.video_net='optical_flow'"):
    train.init_state(config)


def test_cost_volume_net_sees_which_way_a_picture_moves_not_its_brightness():
  from avsep_jax.models import seco as seco_model
  rng = np.random.default_rng(3)
  picture = rng.uniform(size=(40, 40, 3)).astype(np.float32)
  clip = np.stack([picture[4:36, 4:36], picture[5:37, 4:36], picture[4:36, 4:36],
                   picture[4:36, 3:35]])[None]               # still, up 1 px, down 1 px, right 1 px
  net = seco_model.CostVolumeNet(max_shift=2, rngs=nnx.Rngs(0))
  volume = np.asarray(net.cost_volume(jnp.asarray(clip)))[0, :, 8:24, 8:24].mean((1, 2))
  assert volume.shape == (4, 25)
  peaks = [divmod(int(k), 5) for k in volume.argmax(-1)]     # (dy + 2, dx + 2)
  assert peaks == [(2, 2), (1, 2), (3, 2), (2, 3)]
  # Local normalisation: brightness and contrast change nothing.
  np.testing.assert_allclose(net.cost_volume(jnp.asarray(3 * clip + 0.2)),
                             net.cost_volume(jnp.asarray(clip)), rtol=1e-3, atol=1e-3)
  assert net(jnp.asarray(clip), pool_time=False).shape == (1, 4, 64)
  config = seco.get_config("tiny,fast")
  config.model.video_net = "cost_volume"
  config.model.video = dict(max_shift=1, window=3, widths=(4, 4), out_channels=8)
  one_step_trains(config, synthetic_batch(config, 2), ("unet", "video", "visual_proj"))
  config.model.video = dict(max_shift=0)
  with pytest.raises(ValueError, match="max_shift=0"):
    train.init_state(config)


def test_centred_frame_features_give_still_players_the_same_masks():
  config = seco.get_config("tiny,fast")            # per-frame weights
  config.model.video_net = "cost_volume"          # frame by frame: no padding in time
  config.model.video = dict(max_shift=1, window=3, widths=(4, 4), temporal_kernel=1,
                            out_channels=8)
  config.model.centre_frame_features = True
  batch = synthetic_batch(config, 2)
  graphdef, state, _ = train.init_state(config)
  model = nnx.merge(graphdef, state).model
  features = train.mixture_features(config, jnp.asarray(batch["sources"]).sum(1))
  rng = np.random.default_rng(4)
  stills = np.broadcast_to(rng.normal(size=(2, 2, 1, 32, 32, 3)), batch["frames"].shape)
  out = model({"mix_mag": features["mix_mag"], "frames": jnp.asarray(stills, jnp.float32)})
  # Two different still pictures: their clip features differ, but with the clip
  # mean taken out nothing is left to tell the sources' masks apart.
  vision = np.asarray(out["vision_feat"])
  assert np.abs(vision[:, 0] - vision[:, 1]).max() > 1e-3
  logits = np.asarray(out["mask_logits"][0])
  centred_gap = np.abs(logits[:, 0] - logits[:, 1]).max()
  model.centre_frame_features = False
  logits = np.asarray(model({"mix_mag": features["mix_mag"],
                             "frames": jnp.asarray(stills, jnp.float32)})["mask_logits"][0])
  plain_gap = np.abs(logits[:, 0] - logits[:, 1]).max()
  assert plain_gap > 0 and centred_gap <= 1e-3 * plain_gap
