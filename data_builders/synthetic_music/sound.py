"""Rendering note events to audio with a General-MIDI soundfont (tinysoundfont).

tinysoundfont is a small native synthesizer in a wheel; it renders straight to
float32 at any sample rate, so no MIDI file, audio device or resampling is
involved.
"""

from __future__ import annotations

import os

import numpy as np

DRUM_CHANNEL = 9  # General MIDI channel 10


def default_soundfont() -> str:
  """Path of the TimGM6mb General-MIDI soundfont shipped inside the pretty_midi wheel."""
  import pretty_midi  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")


class Renderer:
  """One synthesizer with a loaded soundfont; renders one voice at a time.

  Args:
    soundfont: path of an `.sf2` file.
    sample_rate: output rate in Hz.
  """

  def __init__(self, soundfont: str, sample_rate: int):
    import tinysoundfont  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(soundfont):
      raise ValueError(f"soundfont {soundfont}: no such file")
    self.sample_rate = sample_rate
    self._synth = tinysoundfont.Synth(samplerate=sample_rate)
    try:
      self._sfid = self._synth.sfload(soundfont)
    except Exception as e:  # tinysoundfont raises its own exception type
      raise ValueError(f"soundfont {soundfont}: cannot be loaded ({e})") from e

  def render(self, events: np.ndarray, num_samples: int, *, program: int = 0,
             is_drums: bool = False) -> np.ndarray:
    """Audio of note events: `[E, 4]` rows `(onset_s, key, velocity, duration_s)` -> `[L]` float32.

    Notes still sounding at the end are cut; the synthesizer is silenced and
    flushed before each call, so a render depends only on its arguments.
    """
    synth = self._synth
    synth.sounds_off()
    self._generate(4096)  # voices fade out over a few ms after sounds_off: start from silence
    channel = DRUM_CHANNEL if is_drums else 0
    if is_drums:
      synth.program_select(channel, self._sfid, 128, 0, True)
    else:
      synth.program_select(channel, self._sfid, 0, program)
    # (sample, order, key, velocity): note-offs sort before note-ons at the same sample.
    timeline = []
    for onset, key, velocity, duration in events:
      on = int(round(onset * self.sample_rate))
      off = int(round((onset + duration) * self.sample_rate))
      timeline.append((on, 1, int(key), int(velocity)))
      timeline.append((max(off, on + 1), 0, int(key), 0))
    timeline.sort()
    out = np.zeros(num_samples, np.float32)
    position = 0
    for sample, is_on, key, velocity in timeline:
      sample = min(sample, num_samples)
      if sample > position:
        out[position:sample] = self._generate(sample - position)
        position = sample
      if position >= num_samples:
        break
      if is_on:
        synth.noteon(channel, key, velocity)
      else:
        synth.noteoff(channel, key)
    if position < num_samples:
      out[position:] = self._generate(num_samples - position)
    synth.sounds_off()
    return out

  def _generate(self, count: int) -> np.ndarray:
    stereo = np.frombuffer(self._synth.generate(count), np.float32).reshape(count, 2)
    return stereo.mean(1)


def normalise_loudness(audio: np.ndarray, target_rms: float = 0.1, peak: float = 0.95,
                       frame: int = 1024) -> np.ndarray:
  """Scales a clip so its sounding part has RMS `target_rms`, peaks kept below `peak`.

  Only frames louder than 1% of the loudest frame count towards the RMS, so a
  clip with long rests is not boosted for its silence.
  """
  usable = len(audio) // frame * frame
  if usable == 0:
    return audio
  frame_rms = np.sqrt(np.mean(audio[:usable].reshape(-1, frame) ** 2, 1))
  if frame_rms.max() <= 0:
    return audio
  sounding = frame_rms[frame_rms > 0.01 * frame_rms.max()]
  gain = target_rms / np.sqrt(np.mean(sounding ** 2))
  gain = min(gain, peak / max(np.abs(audio).max(), 1e-12))
  return (audio * gain).astype(np.float32)
