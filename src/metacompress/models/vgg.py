"""VGG for 32×32 images in the two conventions the thesis uses.

* ``head="gap"`` — FORCE / ProsPr convention (thesis §A.4.1): the torchvision conv stack with
  BatchNorm, unchanged, then global average pooling and a single linear layer.
* ``head="mlp"`` — the 3SP convention (thesis §A.1): average-pool to 2×2, then linear layers with
  1024 and 512 hidden units and the classifier.
"""

from torch import nn

# torchvision's VGG configurations: numbers are conv widths, "M" a 2×2 max-pool.
VGG_CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}


def conv_bn_relu_stack(config, in_channels: int) -> nn.Sequential:
    layers = []
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
            in_channels = item
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, depth: int = 16, num_classes: int = 10, in_channels: int = 3, head: str = "gap"):
        super().__init__()
        config = VGG_CONFIGS[depth]
        # The 3SP model pools to 2×2 after the last block, so its stack has no final max-pool.
        if head == "mlp":
            config = config[:-1]
        self.features = conv_bn_relu_stack(config, in_channels)
        width = [c for c in config if c != "M"][-1]
        if head == "gap":
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(width, num_classes)
        elif head == "mlp":
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.classifier = nn.Sequential(
                nn.Linear(width * 4, 1024), nn.ReLU(),
                nn.Linear(1024, 512), nn.ReLU(),
                nn.Linear(512, num_classes),
            )
        else:
            raise ValueError(f"unknown VGG head {head!r} (expected 'gap' or 'mlp')")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(x.flatten(1))


class VGGLike(nn.Module):
    """The "VGG-like" CIFAR net of the quantization literature (Courbariaux et al. 2015; Louizos et
    al. 2019) that thesis Table 4.1 uses: 2×(128C3) – MP2 – 2×(256C3) – MP2 – 2×(512C3) – MP2 –
    FC 1024 – classifier, every conv and the hidden linear layer followed by BatchNorm and ReLU.
    ``width`` scales every layer (the CPU benchmark profile uses 1/4)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        c = [max(1, round(n * width)) for n in (128, 256, 512, 1024)]
        self.features = conv_bn_relu_stack((c[0], c[0], "M", c[1], c[1], "M", c[2], c[2], "M"), in_channels)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c[2] * 16, c[3], bias=False), nn.BatchNorm1d(c[3]),
                                        nn.ReLU(), nn.Linear(c[3], num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))
