"""The classes of `synthetic_music`: a General-MIDI voice and a picture for each.

Names follow MUSIC-21 where the instrument is one of its classes (accordion,
acoustic_guitar, banjo, congas, drum, flute, piano, saxophone, trumpet,
violin); harp, maracas and trombone are extra classes with a distinct sound
and picture. Pictures default to the Twemoji artwork of the instrument.
"""

from __future__ import annotations

import dataclasses

from data_builders.synthetic_music.melodies import Voice


@dataclasses.dataclass(frozen=True)
class Instrument:
  name: str
  emoji: str            # Twemoji code point(s) of the default picture, e.g. "1f3bb"
  voices: tuple[Voice, ...]  # one is drawn per clip


# General MIDI drum keys (channel 10).
_KICK, _SNARE, _CLOSED_HAT, _OPEN_HAT, _LOW_TOM, _HIGH_TOM = 36, 38, 42, 46, 45, 50
_MUTE_HI_CONGA, _OPEN_HI_CONGA, _LOW_CONGA = 62, 63, 64
_MARACAS = 70

INSTRUMENTS = (
    Instrument("accordion", "1fa97", (Voice(program=21, low=53, high=89),)),
    Instrument("acoustic_guitar", "1f3b8", (Voice(program=24, low=40, high=84, legato=(0.9, 1.0)),
                                            Voice(program=25, low=40, high=84, legato=(0.9, 1.0)))),
    Instrument("banjo", "1fa95", (Voice(program=105, low=48, high=84, legato=(0.9, 1.0)),)),
    Instrument("congas", "1fa98", (Voice(drum_keys=(_LOW_CONGA, _OPEN_HI_CONGA, _MUTE_HI_CONGA)),)),
    Instrument("drum", "1f941", (Voice(drum_keys=(_KICK, _LOW_TOM, _SNARE, _HIGH_TOM, _CLOSED_HAT,
                                                  _OPEN_HAT)),)),
    Instrument("flute", "1fa88", (Voice(program=73, low=60, high=96),)),
    Instrument("harp", "1fa89", (Voice(program=46, low=36, high=91, legato=(0.9, 1.0)),)),
    Instrument("maracas", "1fa87", (Voice(drum_keys=(_MARACAS,)),)),
    Instrument("piano", "1f3b9", (Voice(program=0, low=40, high=96),)),
    Instrument("saxophone", "1f3b7", (Voice(program=65, low=49, high=81),)),
    Instrument("trombone", "1fa8a", (Voice(program=57, low=40, high=72),)),
    Instrument("trumpet", "1f3ba", (Voice(program=56, low=55, high=82),)),
    Instrument("violin", "1f3bb", (Voice(program=40, low=55, high=100),)),
)
CLASS_NAMES = tuple(i.name for i in INSTRUMENTS)
