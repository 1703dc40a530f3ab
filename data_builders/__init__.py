"""TFDS dataset builders; importing this package registers them by name."""
