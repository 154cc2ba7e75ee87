import pytest
import torch
from torch import nn

from metacompress.errors import UserError
from metacompress.models import MODEL_NAMES, ModelSpec, create_model, model_from_spec


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_a_batch_to_logits(name):
    channels, size = (1, 28) if name.startswith("lenet") else (3, 32)
    model = create_model(name, num_classes=7, in_channels=channels, image_size=size)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_lenet_parameter_counts_match_the_hand_count():
    # 784·300+300 + 300·100+100 + 100·10+10
    assert n_params(create_model("lenet300", 10, 1, 28)) == 266_610
    # conv 1·6·25+6, conv 6·16·25+16, fc 400·120+120, 120·84+84, 84·10+10
    assert n_params(create_model("lenet5", 10, 1, 28)) == 156 + 2_416 + 48_120 + 10_164 + 850


def test_resnet20_is_the_open_lth_layout():
    model = create_model("resnet20")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    three_by_three = [m for m in convs if m.kernel_size == (3, 3)]
    shortcuts = [m for m in convs if m.kernel_size == (1, 1)]
    assert len(three_by_three) == 19 and len(shortcuts) == 2
    assert sorted({m.out_channels for m in convs}) == [16, 32, 64]
    # every 1×1 downsampling conv is followed by its own BatchNorm
    for block in model.stages.modules():
        if isinstance(block, nn.Sequential) and len(block) == 2 and isinstance(block[0], nn.Conv2d):
            assert isinstance(block[1], nn.BatchNorm2d) and block[0].stride == (2, 2)
    assert model.fc.in_features == 64


def test_resnet18_cifar_variant_has_3x3_stem_and_no_maxpool():
    model = create_model("resnet18")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert n_params(model) == 11_173_962  # the standard CIFAR ResNet-18 count


def test_vgg_conventions():
    gap = create_model("vgg16")
    assert sum(isinstance(m, nn.Conv2d) for m in gap.modules()) == 13
    assert isinstance(gap.classifier, nn.Linear) and gap.classifier.in_features == 512
    assert sum(isinstance(m, nn.Conv2d) for m in create_model("vgg19").modules()) == 16
    assert sum(isinstance(m, nn.Conv2d) for m in create_model("vgg11").modules()) == 8
    three_sp = create_model("vgg19-3sp")
    widths = [m.out_features for m in three_sp.classifier if isinstance(m, nn.Linear)]
    assert widths == [1024, 512, 10] and three_sp.classifier[0].in_features == 512 * 2 * 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in three_sp.modules()) == 16


def test_same_seed_same_model_and_spec_round_trip():
    spec = ModelSpec("resnet20", num_classes=10, in_channels=3, image_size=32)
    torch.manual_seed(3)
    a = model_from_spec(spec)
    torch.manual_seed(3)
    b = model_from_spec(ModelSpec(**spec.to_dict()))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model 'resnet99'"):
        create_model("resnet99")
