"""The project's example feature spec (DESIGN.md): every builder writes exactly this."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


def features(class_names) -> tfds.features.FeaturesDict:
  """The example `FeaturesDict`, with `labels` over `class_names`."""
  jpeg = tfds.features.Tensor(shape=(), dtype=np.object_)  # encoded bytes, decoded by the reader
  return tfds.features.FeaturesDict({
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
      "sources": tfds.features.Tensor(shape=(None, None), dtype=np.int16,
                                      encoding=tfds.features.Encoding.ZLIB),
      "labels": tfds.features.Sequence(tfds.features.ClassLabel(names=list(class_names))),
      "frames": tfds.features.Sequence(jpeg),
      "fps": tfds.features.Scalar(dtype=np.float32),
      "detections": tfds.features.Tensor(shape=(None, 7), dtype=np.float32),
      "object_crops": tfds.features.Sequence(jpeg),
      "object_crop_rows": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "video_id": tfds.features.Text(),
  })
