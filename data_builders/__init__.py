"""TFDS dataset builders; importing this package registers them by name.

    import data_builders
    tfds.builder("synthetic_music/small", data_dir=...).download_and_prepare()
"""

from data_builders import audioset_instruments  # registers "audioset_instruments"
from data_builders import music  # registers "music"
from data_builders import synthetic_music  # registers "synthetic_music"
from data_builders import urmp  # registers "urmp"
from data_builders import vggsound  # registers "vggsound"
