"""``create_model(name, num_classes, in_channels)`` and the small JSON spec saved beside weights."""

from dataclasses import asdict, dataclass
from functools import partial

from torch import nn

from metacompress.errors import UserError
from metacompress.models.lenet import LeNet5, LeNet300100
from metacompress.models.resnet import resnet18, resnet20
from metacompress.models.vgg import VGG, VGGLike

_BUILDERS = {
    "lenet300": LeNet300100,
    "lenet5": LeNet5,
    "vgg11": partial(VGG, 11, head="gap"),
    "vgg16": partial(VGG, 16, head="gap"),
    "vgg19": partial(VGG, 19, head="gap"),
    "vgg19-3sp": partial(VGG, 19, head="mlp"),
    "vgglike": VGGLike,
    "vgglike-quarter": partial(VGGLike, width=0.25),
    "resnet20": resnet20,
    "resnet18": resnet18,
}
_TAKES_IMAGE_SIZE = {"lenet300", "lenet5"}
MODEL_NAMES = tuple(_BUILDERS)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a reference model; stored as JSON beside its weights."""

    name: str
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Build a freshly initialized reference network by name (see ``MODEL_NAMES``).

    ``image_size`` matters only for the LeNets, whose first linear layer depends on it; the
    convolutional nets pool globally and accept any input of at least 32 pixels.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r} (choose from {', '.join(MODEL_NAMES)})") from None
    if name in _TAKES_IMAGE_SIZE:
        return builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    return builder(num_classes=num_classes, in_channels=in_channels)


def model_from_spec(spec: ModelSpec) -> nn.Module:
    return create_model(spec.name, spec.num_classes, spec.in_channels, spec.image_size)
