"""Switch a module to train or eval mode for a block, and back to what it was."""

from contextlib import contextmanager

from torch import nn


@contextmanager
def module_mode(model: nn.Module, training: bool):
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)
