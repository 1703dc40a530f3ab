"""avsep_jax.data: dataset preparation."""

import json
import os
import pathlib
import pickle

import numpy as np

import pytest

from avsep_jax import data
from avsep_jax.data import mixtures


def test_prepare_dataset_reuses_a_prepared_build(tiny_data_dir):
  marker = os.path.join(tiny_data_dir, "synthetic_music", "tiny", "1.0.0", "dataset_info.json")
  before = os.path.getmtime(marker)
  builder = data.prepare_dataset("synthetic_music/tiny", tiny_data_dir)
  assert builder.is_prepared() and os.path.getmtime(marker) == before


def test_prepare_dataset_rejects_unknown_names(tmp_path):
  with pytest.raises(ValueError, match="'no_such_dataset' is not registered"):
    data.prepare_dataset("no_such_dataset", str(tmp_path))


SEGMENT = 32767


@pytest.fixture(scope="module")
def train_split(tiny_data_dir):
  split = data.open_split("synthetic_music/tiny", "train", tiny_data_dir)
  return split, data.clip_index(split)


def first_batches(split, index, count=1, **kwargs):
  options = data.MixOptions(num_mix=kwargs.pop("num_mix", 2), segment_length=SEGMENT,
                            crop_size=32, num_frames=kwargs.pop("num_frames", 0), frame_size=48)
  iterator = iter(data.train_dataset(split, index, options, **kwargs))
  return [next(iterator) for _ in range(count)]


def test_train_batches_follow_the_batch_contract(train_split):
  split, index = train_split
  for num_mix in (2, 3):
    batch, = first_batches(split, index, batch_size=4, seed=0, num_mix=num_mix, num_frames=3)
    assert batch["mixture"].shape == (4, SEGMENT) and batch["mixture"].dtype == np.float32
    assert batch["sources"].shape == (4, num_mix, SEGMENT)
    assert batch["crops"].shape == (4, num_mix, 32, 32, 3) and batch["crops"].dtype == np.float32
    assert batch["frames"].shape == (4, num_mix, 3, 48, 48, 3)
    assert batch["labels"].shape == (4, num_mix) and batch["labels"].dtype == np.int32
    assert batch["source_mask"].all()
    np.testing.assert_allclose(batch["mixture"], batch["sources"].mean(1), atol=1e-6)
    for labels in batch["labels"]:
      assert len(set(labels)) == num_mix  # no class twice in a mixture
    assert -3 < batch["crops"].min() < 0 < batch["crops"].max() < 3  # ImageNet-normalised
    assert np.abs(batch["sources"]).max() <= 1.0 and np.abs(batch["sources"]).max() > 0.05


def test_train_stream_is_seeded_and_restores_from_its_state(train_split):
  split, index = train_split
  a, = first_batches(split, index, batch_size=2, seed=3)
  b, = first_batches(split, index, batch_size=2, seed=3)
  c, = first_batches(split, index, batch_size=2, seed=4)
  np.testing.assert_array_equal(a["sources"], b["sources"])
  assert not np.array_equal(a["sources"], c["sources"])
  options = data.MixOptions(segment_length=SEGMENT, crop_size=32, num_frames=0)
  iterator = iter(data.train_dataset(split, index, options, batch_size=2, seed=3))
  next(iterator)
  state = iterator.get_state()
  want = next(iterator)
  fresh = iter(data.train_dataset(split, index, options, batch_size=2, seed=3))
  fresh.set_state(state)  # as a restored checkpoint would
  got = next(fresh)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key])


def test_process_shards_split_the_stream_disjointly(train_split):
  split, index = train_split
  whole = first_batches(split, index, count=4, batch_size=1, seed=5)
  shards = [first_batches(split, index, count=2, batch_size=1, seed=5, shard_index=k,
                          shard_count=2) for k in (0, 1)]
  for k in range(4):  # element k of the stream goes to process k % 2, and nowhere else
    np.testing.assert_array_equal(shards[k % 2][k // 2]["sources"], whole[k]["sources"])
  assert not np.array_equal(shards[0][0]["sources"], shards[1][0]["sources"])
  with pytest.raises(ValueError, match="shard_index=2"):
    first_batches(split, index, batch_size=1, seed=0, shard_index=2, shard_count=2)


def test_worker_processes_make_the_same_batches(train_split):
  """Batches are formed before the stream is split among workers: any worker
  count gives the same batches in the same order."""
  split, index = train_split
  want = first_batches(split, index, count=3, batch_size=2, seed=1)
  got = first_batches(split, index, count=3, batch_size=2, seed=1, num_workers=2)
  for g, w in zip(got, want):
    for key in w:
      np.testing.assert_array_equal(g[key], w[key])
    assert g["crops"].dtype == np.float32 and g["sources"].dtype == np.float32


def test_open_indexed_split_caches_the_index_with_its_build(tiny_data_dir):
  source, index = data.open_indexed_split("synthetic_music/tiny", "validation", tiny_data_dir)
  cache = pathlib.Path(tiny_data_dir, "synthetic_music", "tiny", "1.0.0",
                       "clip_index.validation.json")
  assert cache.exists() and index == data.clip_index(source)
  try:  # a second open reads the cache instead of the examples
    cached = json.loads(cache.read_text())
    cached["video_ids"] = ["cached-" + v for v in cached["video_ids"]]
    cache.write_text(json.dumps(cached))
    _, again = data.open_indexed_split("synthetic_music/tiny", "validation", tiny_data_dir)
    assert again.video_ids == tuple(cached["video_ids"]) and again.labels == index.labels
  finally:
    cache.unlink()


def test_cached_source_keeps_recent_examples_within_its_budget(train_split):
  split, index = train_split
  one = mixtures._nbytes(split[0])
  cached = data.CachedSource(split, max_bytes=int(2.5 * one))
  assert len(cached) == len(split)
  for i in (0, 1, 0, 2, 3):  # 0 is used again, so 1 leaves first
    np.testing.assert_array_equal(cached[i]["audio"], split[i]["audio"])
  assert cached.cached_indices == (2, 3) and cached[3] is cached[3]
  assert 0 < cached.cached_bytes <= 2.5 * one
  clone = pickle.loads(pickle.dumps(cached))  # as sent to a grain worker: an empty cache
  assert clone.cached_bytes == 0 and clone[2]["video_id"] == split[2]["video_id"]
  assert data.CachedSource(split, max_bytes=0)[1]["video_id"] == split[1]["video_id"]


def test_eval_list_is_saved_complete_and_reused(tiny_data_dir, tmp_path):
  split = data.open_split("synthetic_music/tiny", "test", tiny_data_dir)
  index = data.clip_index(split, tmp_path / "index.json")
  assert (tmp_path / "index.json").exists()
  assert data.clip_index(split, tmp_path / "index.json") == index
  path = data.eval_list_path(tmp_path, "synthetic_music/tiny", "test", 2,
                             segment_length=SEGMENT, per_combination=2, seed=0)
  assert path.name == f"synthetic_music-tiny_test_2mix_len{SEGMENT}_per2_seed0.json"
  assert data.eval_list_path(tmp_path, "d", "test", 3, segment_length=100, per_combination=1,
                             seed=1, class_subset=(4, 2)).name == (
                                 "d_test_3mix_len100_per1_seed1_classes-2-4.json")
  # Other settings name another file, so they never clash with a saved list.
  assert len({data.eval_list_path(tmp_path, "d", "test", 2, segment_length=length,
                                  per_combination=per, seed=0)
              for length in (100, 200) for per in (1, 2)}) == 4
  specs = data.eval_mixture_list(path, index, 2, SEGMENT, seed=0, per_combination=2)
  classes = len(set(index.labels))
  assert len(specs) == classes * (classes - 1) // 2 * 2
  pairs = {tuple(sorted(index.labels[i] for i in s.indices)) for s in specs}
  assert len(pairs) == classes * (classes - 1) // 2
  assert all(o == (index.lengths[i] - SEGMENT) // 2 for s in specs
             for i, o in zip(s.indices, s.offsets))
  assert data.eval_mixture_list(path, index, 2, SEGMENT, seed=0, per_combination=2) == specs
  with pytest.raises(ValueError, match="made with"):
    data.eval_mixture_list(path, index, 2, SEGMENT, seed=1, per_combination=2)
  options = data.MixOptions(segment_length=SEGMENT, crop_size=32, num_frames=0)
  batches = list(data.eval_dataset(split, specs[:5], options, batch_size=2))
  assert [b["mixture"].shape[0] for b in batches] == [2, 2, 1]


def test_missing_or_corrupt_shards_are_named(tiny_data_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  copy = tmp_path / "tfds"
  shutil.copytree(tiny_data_dir, copy)
  folder = copy / "synthetic_music" / "tiny" / "1.0.0"
  train = next(folder.glob("synthetic_music-train.array_record-*"))
  train.unlink()
  with pytest.raises(ValueError, match=f"shard {train} of synthetic_music/tiny/train is missing"):
    data.open_split("synthetic_music/tiny", "train", str(copy))
  test = next(folder.glob("synthetic_music-test.array_record-*"))
  with open(test, "r+b") as f:
    f.truncate(1000)
  with pytest.raises(ValueError, match=f"shard {test} "):
    data.open_split("synthetic_music/tiny", "test", str(copy))
  with pytest.raises(ValueError, match="no split 'nope'"):
    data.open_split("synthetic_music/tiny", "nope", str(copy))
  with pytest.raises(ValueError, match="is not prepared"):
    data.open_split("synthetic_music/tiny", "train", str(tmp_path / "empty"))


def test_orbax_checkpoints_the_iterator(train_split, tmp_path):
  import grain  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  split, index = train_split
  options = data.MixOptions(segment_length=SEGMENT, crop_size=32, num_frames=0)

  def stream():
    return iter(data.train_dataset(split, index, options, batch_size=2, seed=9))

  iterator = stream()
  next(iterator)
  manager = ocp.CheckpointManager(tmp_path / "ckpt", item_handlers={
      "data": grain.checkpoint.CheckpointHandler()})
  manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  want = next(iterator)
  resumed = stream()
  manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  np.testing.assert_array_equal(next(resumed)["sources"], want["sources"])


def test_mixed_source_counts_are_padded_and_masked(train_split):
  split, index = train_split
  options = data.MixOptions(num_mix=3, min_mix=2, segment_length=SEGMENT, crop_size=32,
                            num_frames=0)
  batch = next(iter(data.train_dataset(split, index, options, batch_size=8, seed=5)))
  counts = batch["source_mask"].sum(1)
  assert set(counts) == {2, 3}, counts  # both sizes drawn (seeded)
  assert (batch["source_mask"] == (np.arange(3) < counts[:, None])).all()  # padding last
  padded = ~batch["source_mask"]
  assert not batch["sources"][padded].any() and not batch["labels"][padded].any()
  np.testing.assert_allclose(batch["mixture"], batch["sources"].sum(1) / counts[:, None],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="min_mix=4 must be in"):
    data.train_dataset(split, index, data.MixOptions(num_mix=3, min_mix=4), batch_size=2, seed=0)



def test_same_class_mixtures_take_different_clips_of_one_class(train_split):
  split, index = train_split
  rng = np.random.default_rng(0)
  clips = mixtures.ClipIndex(labels=(0, 0, 0, 1, 1, 1, 2), lengths=(9,) * 7,
                             video_ids=tuple("abcdefg"))
  kinds = set()
  for _ in range(30):
    spec = mixtures.sample_mixture(rng, clips, 3, 4, same_class=True)
    label, = {clips.labels[i] for i in spec.indices}
    kinds.add(label)
    assert len(set(spec.indices)) == (3 if label < 2 else 1)  # class 2 repeats its one clip
  assert kinds == {0, 1, 2}

  def labels_of(fraction):
    options = data.MixOptions(segment_length=SEGMENT, crop_size=32, num_frames=0,
                              same_class_fraction=fraction)
    batch = next(iter(data.train_dataset(split, index, options, batch_size=16, seed=4)))
    return batch["labels"], batch["sources"]

  labels, sources = labels_of(1.0)
  assert (labels[:, 0] == labels[:, 1]).all()
  # The tiny split has one clip per class: two segments of it.
  assert all(np.abs(s[0] - s[1]).max() > 0.01 for s in sources)
  labels, _ = labels_of(0.5)
  same = labels[:, 0] == labels[:, 1]
  assert 0 < same.sum() < 16, same                  # both kinds drawn (seeded)
  labels, _ = labels_of(0.0)
  assert (labels[:, 0] != labels[:, 1]).all()
  with pytest.raises(ValueError, match="same_class_fraction=1.5 must be in"):
    data.train_dataset(split, index, data.MixOptions(same_class_fraction=1.5), batch_size=2,
                       seed=0)


def test_fixed_composition_puts_each_count_at_its_batch_positions(train_split):
  split, index = train_split
  assert data.batch_source_counts(2, 3, 8) == (2, 2, 2, 2, 3, 3, 3, 3)
  assert data.batch_source_counts(1, 3, 4) == (1, 1, 2, 3)
  with pytest.raises(ValueError, match="cannot hold every source count"):
    data.batch_source_counts(1, 3, 2)
  counts = data.batch_source_counts(2, 3, 4)
  options = data.MixOptions(num_mix=3, min_mix=2, batch_counts=counts, segment_length=SEGMENT,
                            crop_size=32, num_frames=0)
  for shard in range(2):  # positions count within each process's share of the stream
    iterator = iter(data.train_dataset(split, index, options, batch_size=4, seed=3,
                                       shard_index=shard, shard_count=2))
    for _ in range(3):
      np.testing.assert_array_equal(next(iterator)["source_mask"].sum(1), counts)
  with pytest.raises(ValueError, match="one count in"):
    data.train_dataset(split, index, options, batch_size=8, seed=0)


def test_a_duet_example_reads_as_a_mixture_of_its_own_sources(tiny_data_dir):
  split, index = data.open_indexed_split("synthetic_music/tiny", "duet", tiny_data_dir)
  specs = data.multi_source_specs(index, SEGMENT)
  assert len(specs) == len(split) == 2
  spec = specs[0]
  example = split[spec.indices[0]]
  options = data.MixOptions(num_mix=2, segment_length=SEGMENT, crop_size=32, num_frames=3,
                            frame_size=48)
  batch = mixtures.finish(options.read(split, spec))
  assert batch["sources"].shape == (2, SEGMENT) and batch["frames"].shape == (2, 3, 48, 48, 3)
  assert list(batch["labels"]) == list(example["labels"]) and batch["source_mask"].all()
  offset = spec.offsets[0]
  np.testing.assert_array_equal(
      batch["sources"] * 32768, np.asarray(example["sources"])[:, offset:offset + SEGMENT])
  # The duet's own recording is the sum of its sources (to int16 rounding); the
  # batch's mixture is that sum / 2, as any 2-mixture.
  audio = np.asarray(example["audio"], np.float32)[offset:offset + SEGMENT] / 32768
  np.testing.assert_allclose(batch["mixture"] * 2, audio, atol=3 / 32768)
  # Each player is queried by its own box: crops and frames differ between them.
  assert np.abs(batch["crops"][0] - batch["crops"][1]).mean() > 0.1
  assert np.abs(batch["frames"][0] - batch["frames"][1]).mean() > 0.1


def test_a_frame_rate_keeps_the_frames_spacing_for_any_segment_length(train_split):
  split, _ = train_split
  assert data.frame_count(SEGMENT, 3) == 3
  assert data.frame_count(SEGMENT, 3, frame_rate=4.0) == 12        # 2.97 s at 4 fps
  assert data.frame_count(2 * SEGMENT + 1, 3, frame_rate=4.0) == 24
  fps = float(split[0]["fps"])                                    # the tiny build's 4 fps
  spec = data.MixtureSpec((0,), (0,))
  for length in (SEGMENT // 2, SEGMENT):
    options = data.MixOptions(num_mix=1, segment_length=length, crop_size=32, frame_size=40,
                              frame_rate=fps)
    frames = mixtures.finish(options.read(split, spec))["frames"]
    count = round(length / 11025 * fps)
    assert frames.shape == (1, count, 40, 40, 3)
    # At the stored rate, each frame of the segment once, in order.
    stored = np.stack([mixtures._resize(mixtures._decode(split[0]["frames"][k], "frame"), 40)
                       for k in range(count)])
    np.testing.assert_allclose(frames[0], mixtures.normalise_images(stored), atol=1e-6)


def test_a_multi_label_example_without_its_sources_is_an_error(train_split):
  split, _ = train_split
  example = dict(split[0])
  example["labels"] = np.array([0, 1])
  example["sources"] = np.zeros((0, 0), np.int16)
  with pytest.raises(ValueError, match="2 labels but 0 separate sources"):
    mixtures.read_mixture([example], data.MixtureSpec((0,), (0,)), segment_length=SEGMENT,
                          crop_size=32)
