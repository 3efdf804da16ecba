"""easyhard_jax: easy and hard examples in CNN training, in JAX."""

__version__ = '0.1.0'
