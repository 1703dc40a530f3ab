"""avsep_jax.data: dataset preparation."""

import os

import pytest

from avsep_jax import data


def test_prepare_dataset_reuses_a_prepared_build(tiny_data_dir):
  marker = os.path.join(tiny_data_dir, "synthetic_music", "tiny", "1.0.0", "dataset_info.json")
  before = os.path.getmtime(marker)
  builder = data.prepare_dataset("synthetic_music/tiny", tiny_data_dir)
  assert builder.is_prepared() and os.path.getmtime(marker) == before


def test_prepare_dataset_rejects_unknown_names(tmp_path):
  with pytest.raises(ValueError, match="'no_such_dataset' is not registered"):
    data.prepare_dataset("no_such_dataset", str(tmp_path))
