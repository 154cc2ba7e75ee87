"""Reference networks used throughout the thesis, behind one factory."""

from metacompress.models.factory import MODEL_NAMES, ModelSpec, create_model, model_from_spec
from metacompress.models.modes import module_mode

__all__ = ["MODEL_NAMES", "ModelSpec", "create_model", "model_from_spec", "module_mode"]
