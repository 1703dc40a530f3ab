"""`music` (MUSIC-21, MUSIC-11, MUSIC duets) from a manual_dir of downloaded videos."""

from data_builders.music.music_dataset_builder import Music  # registers "music"
