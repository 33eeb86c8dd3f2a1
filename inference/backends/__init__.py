"""Other backends and formats: NumPyro (JAX) estimators and the ArviZ export."""
