"""Data: dataset preparation, checked split sources, grain mix-and-separate pipelines."""

from avsep_jax.data.mixtures import CachedSource
from avsep_jax.data.mixtures import clip_index
from avsep_jax.data.mixtures import load_mixture
from avsep_jax.data.mixtures import MixtureSpec
from avsep_jax.data.pipeline import batch_source_counts
from avsep_jax.data.pipeline import eval_dataset
from avsep_jax.data.pipeline import eval_list_path
from avsep_jax.data.pipeline import eval_mixture_list
from avsep_jax.data.pipeline import frame_count
from avsep_jax.data.pipeline import MixOptions
from avsep_jax.data.pipeline import multi_source_specs
from avsep_jax.data.pipeline import train_dataset
from avsep_jax.data.prepare import open_indexed_split
from avsep_jax.data.prepare import open_split
from avsep_jax.data.prepare import prepare_dataset
