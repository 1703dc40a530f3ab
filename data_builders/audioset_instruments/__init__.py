"""`audioset_instruments`: AudioSet clips of single instruments from a manual_dir."""

from data_builders.audioset_instruments.audioset_instruments_dataset_builder import (  # noqa: F401
    AudiosetInstruments)  # registers "audioset_instruments"
