"""`urmp`: URMP ensembles with each part's own recording (true sources)."""

from data_builders.urmp.urmp_dataset_builder import Urmp  # registers "urmp"
