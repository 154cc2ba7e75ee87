"""metacompress: compression of models and data with meta-gradients."""

__version__ = "0.1.0"
