"""avsep_jax: visually-guided music source separation in JAX/Flax."""
