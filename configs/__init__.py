"""Experiment configs (ml_collections), one file per system: `get_config(arg=None)`."""
