"""Builds tiny local TFDS datasets for tests (array_record, no downloads).

``build(data_dir, name, splits)`` writes ``data_dir/name/1.0.0`` with TFDS's
own writer (a ``GeneratorBasedBuilder`` whose examples are the given dicts;
no TensorFlow needed) and returns the version directory. The builder class is
made without registering its name, so the dataset is then read as a prepared
directory, as a user's would be.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import numpy as np


def _feature(tfds, value):
  if isinstance(value, str):
    return tfds.features.Text()
  if isinstance(value, bool):
    return np.bool_
  if isinstance(value, int):
    return np.int64
  if isinstance(value, float):
    return np.float32
  if isinstance(value, Mapping):
    return tfds.features.FeaturesDict(
        {k: _feature(tfds, v) for k, v in value.items()})
  raise TypeError(f"no TFDS feature for {value!r}")


def build(data_dir: str, name: str,
          splits: Mapping[str, Sequence[Mapping]], *,
          config: Optional[str] = None) -> str:
  """Prepares dataset ``name`` (splits of example dicts) under ``data_dir``.

  Every example of every split must have the keys and types of the first
  (str → Text, int → int64, float → float32, dict → nested features). With
  ``config`` the layout is ``data_dir/name/config/1.0.0``, as TFDS writes a
  builder config (a registered builder of that name then reads it).

  Returns:
    The version directory (``data_dir/name[/config]/1.0.0``).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  first = next(ex for exs in splits.values() for ex in exs)
  features = tfds.features.FeaturesDict(
      {k: _feature(tfds, v) for k, v in first.items()})

  with tfds.core.registered.skip_registration():

    class _Builder(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")
      url_infos = {}  # nothing to download (and no checksums file to find)
      BUILDER_CONFIGS = ([tfds.core.BuilderConfig(name=config)] if config
                         else [])

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=features)

      def _split_generators(self, dl_manager):
        del dl_manager
        return {s: self._generate_examples(s) for s in splits}

      def _generate_examples(self, split):
        for k, ex in enumerate(splits[split]):
          yield k, dict(ex)

  _Builder.name = name
  builder = _Builder(data_dir=data_dir, config=config,
                     file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          try_download_gcs=False))
  return os.path.join(data_dir, name, *([config] if config else []), "1.0.0")
