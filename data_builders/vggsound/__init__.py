"""`vggsound`: VGGSound's instrument classes from a manual_dir of downloaded clips."""

from data_builders.vggsound.vggsound_dataset_builder import Vggsound  # registers "vggsound"
