"""LeNet-300-100 and LeNet-5 (LeCun et al., 1998), the MNIST networks of the pruning literature."""

from torch import nn


class LeNet300100(nn.Module):
    """Fully connected 300-100 network on flattened images."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = x.flatten(1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """conv(6,5×5) → pool → conv(16,5×5) → pool → 120 → 84 → classes, ReLU activations.

    28×28 inputs are padded by 2 so the 5×5 feature map of the original 32×32 design is kept.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        padding = 2 if image_size == 28 else 0
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=padding)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        side = ((image_size + 2 * padding - 4) // 2 - 4) // 2  # (side after conv1, pool, conv2, pool)
        if side < 1:
            raise ValueError(f"LeNet-5 needs images of at least 28 pixels, got {image_size}")
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = x.flatten(1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)
