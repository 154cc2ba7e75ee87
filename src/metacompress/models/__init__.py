"""Reference networks used throughout the thesis, behind one factory."""

from metacompress.models.factory import MODEL_NAMES, ModelSpec, create_model, model_from_spec

__all__ = ["MODEL_NAMES", "ModelSpec", "create_model", "model_from_spec"]
