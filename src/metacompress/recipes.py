"""Per-dataset training defaults: what ``metacompress train`` uses unless told otherwise."""

from dataclasses import replace

from metacompress.data import ClassificationData, load_classification, train_val_split
from metacompress.models import ModelSpec
from metacompress.training import TrainConfig

_CIFAR = TrainConfig(epochs=200, batch_size=256, lr=0.1, weight_decay=5e-4, augment=True)  # thesis §A.4.2
_DIGITS = TrainConfig(epochs=10, batch_size=64, lr=0.05, weight_decay=5e-4, augment=False)
RECIPES = {"cifar10": _CIFAR, "mnist": _DIGITS, "fashion-mnist": _DIGITS, "mnist-sample": _DIGITS}

# Scored after training only: CIFAR-10's complete 10,000-image test set exists here only as JPEG q75,
# and scoring it every epoch would cost more than training on the 7,728-image genuine subset.
FINAL_SPLITS = {"cifar10": ("test-jpeg",)}


def default_config(dataset: str, **overrides) -> TrainConfig:
    """The dataset's recipe with every non-None override applied."""
    return replace(RECIPES.get(dataset, TrainConfig()), **{k: v for k, v in overrides.items() if v is not None})


def spec_for(model: str, data: ClassificationData) -> ModelSpec:
    _, channels, height, _ = data.images.shape
    return ModelSpec(model, num_classes=len(data.classes), in_channels=channels, image_size=height)


def load_experiment_data(dataset: str, data_root=None, val_fraction: float = 0.0, seed: int = 0):
    """Train split (minus a seeded validation share) and the splits scored after every epoch."""
    train = load_classification(dataset, "train", data_root)
    eval_sets = {"test": load_classification(dataset, "test", data_root)}
    if val_fraction > 0:
        train_idx, val_idx = train_val_split(len(train), val_fraction, seed)
        train, eval_sets = train.subset(train_idx), {"val": train.subset(val_idx)} | eval_sets
    return train, eval_sets
