"""The embedded default dataset `synthetic_music` (see synthetic_music_dataset_builder)."""

from data_builders.synthetic_music.synthetic_music_dataset_builder import SyntheticMusic
from data_builders.synthetic_music.synthetic_music_dataset_builder import SyntheticMusicConfig
