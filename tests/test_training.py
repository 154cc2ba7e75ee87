import json

import pytest
import torch

from metacompress.checkpoint import load_checkpoint, save_checkpoint
from metacompress.data import ClassificationData
from metacompress.errors import DataError, UserError
from metacompress.models import ModelSpec
from metacompress.training import (TrainConfig, crop_and_flip, evaluate, learning_rate, load_model,
                                   save_model, train)


def synthetic_digits(n=600, classes=4, size=8, seed=0) -> ClassificationData:
    """Each class is a fixed random 8×8 pattern plus noise: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(classes, 1, size, size, generator=g)
    labels = torch.arange(n) % classes
    images = patterns[labels] * 200 + torch.rand(n, 1, size, size, generator=g) * 55
    return ClassificationData(images=images.to(torch.uint8), labels=labels, classes=tuple(map(str, range(classes))),
                              mean=(0.5,), std=(0.25,), name="synthetic", split="train")


SPEC = ModelSpec("lenet300", num_classes=4, in_channels=1, image_size=8)
FAST = TrainConfig(epochs=4, batch_size=50, lr=0.05, milestones=(0.5,), augment=True, seed=1)


def test_multistep_schedule_divides_by_ten_at_half_and_three_quarters():
    config = TrainConfig(epochs=8, lr=0.1)
    lrs = [learning_rate(config, e) for e in range(8)]
    assert lrs[:4] == [0.1] * 4
    assert lrs[4:6] == pytest.approx([0.01] * 2) and lrs[6:] == pytest.approx([0.001] * 2)


def test_crop_and_flip_hand_computed():
    images = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4)
    centre = crop_and_flip(images, torch.tensor([[4, 4]]), torch.tensor([False]))
    assert torch.equal(centre, images)
    shifted = crop_and_flip(images, torch.tensor([[3, 5]]), torch.tensor([False]))  # up one row, right one column
    assert torch.equal(shifted[0, 0, 0], torch.zeros(4))  # the padded row
    assert torch.equal(shifted[0, 0, 1:, :3], images[0, 0, :3, 1:])
    assert torch.equal(shifted[0, 0, 1:, 3], torch.zeros(3))
    flipped = crop_and_flip(images, torch.tensor([[4, 4]]), torch.tensor([True]))
    assert torch.equal(flipped, images.flip(3))


def test_training_learns_and_reports_each_epoch(tmp_path):
    data = synthetic_digits()
    config = TrainConfig(epochs=4, batch_size=50, lr=0.05, milestones=(0.5,), augment=False)
    result = train(SPEC, data, {"test": synthetic_digits(seed=0, n=200)}, config, out_dir=tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert [r["lr"] for r in lines] == pytest.approx([0.05, 0.05, 0.005, 0.005])
    assert result.final["test_accuracy"] >= 0.95
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.05), ("adam", 1e-3)])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, optimizer, lr):
    data = synthetic_digits()
    config = TrainConfig(**{**FAST.__dict__, "optimizer": optimizer, "lr": lr})
    straight = train(SPEC, data, {}, config, out_dir=tmp_path / "a", progress=False).model
    interrupted = train(SPEC, data, {}, config, out_dir=tmp_path / "b", progress=False, stop_after=2)
    assert interrupted.final["epoch"] == 2
    resumed = train(SPEC, data, {}, config, out_dir=tmp_path / "b", resume=True, progress=False).model
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    history = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]


def test_resume_refuses_a_different_run(tmp_path):
    data = synthetic_digits()
    train(SPEC, data, {}, TrainConfig(epochs=1, batch_size=50, lr=0.05), out_dir=tmp_path, progress=False)
    with pytest.raises(UserError, match="batch_size"):
        train(SPEC, data, {}, TrainConfig(epochs=2, batch_size=100, lr=0.05), out_dir=tmp_path, resume=True)
    with pytest.raises(UserError, match="nothing to resume"):
        train(SPEC, data, {}, FAST, out_dir=tmp_path / "empty", resume=True)


def test_saved_model_reloads_with_identical_predictions(tmp_path):
    data = synthetic_digits(n=100)
    torch.manual_seed(0)
    from metacompress.models import model_from_spec

    model = model_from_spec(SPEC)
    save_model(tmp_path / "m", model, SPEC, data)
    loaded, info = load_model(tmp_path / "m.safetensors")
    assert info["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert evaluate(loaded, data) == evaluate(model, data)


def test_checkpoint_rejects_corrupt_and_mismatched_files(tmp_path):
    save_checkpoint(tmp_path / "a", {"w": torch.ones(3)}, {"x": 1})
    save_checkpoint(tmp_path / "b", {"w": torch.ones(3)}, {"x": 1})
    tensors, info = load_checkpoint(tmp_path / "a")
    assert torch.equal(tensors["w"], torch.ones(3)) and info["x"] == 1
    (tmp_path / "a.json").write_bytes((tmp_path / "b.json").read_bytes())
    with pytest.raises(DataError, match="different saves"):
        load_checkpoint(tmp_path / "a")
    (tmp_path / "b.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(DataError, match="b.safetensors: not a readable safetensors file"):
        load_checkpoint(tmp_path / "b")
    with pytest.raises(DataError, match="c.safetensors: checkpoint file not found"):
        load_checkpoint(tmp_path / "c")
    assert not list(tmp_path.glob("*.tmp"))


def test_pruned_weights_stay_zero_via_after_step_hook():
    data = synthetic_digits(n=200)
    torch.manual_seed(0)
    from metacompress.models import model_from_spec

    model = model_from_spec(SPEC)
    mask = (torch.rand_like(model.fc1.weight) < 0.5).float()

    def reapply(m):
        with torch.no_grad():
            m.fc1.weight.mul_(mask)

    reapply(model)
    trained = train(SPEC, data, {}, TrainConfig(epochs=1, batch_size=50, lr=0.05), model=model,
                    progress=False, after_step=reapply).model
    assert torch.all(trained.fc1.weight[mask == 0] == 0)
    assert torch.count_nonzero(trained.fc1.weight) == int(mask.sum())


def test_shuffled_batches_cover_each_example_once_per_pass_in_a_seeded_order():
    from itertools import islice

    from metacompress.data import load_classification
    from metacompress.training import channel_stats, normalize, shuffled_batches

    data = load_classification("mnist-sample", "test").subset(slice(0, 100))
    batches = list(islice(shuffled_batches(data, 30, seed=5), 6))  # 3 full batches per pass, 2 passes
    again = list(islice(shuffled_batches(data, 30, seed=5), 6))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    mean, std = channel_stats(data, "cpu")
    everything = normalize(data.images, mean, std).flatten(1)
    seen = torch.cat([x.flatten(1) for x, _ in batches[:3]])
    # each example of the first pass is a distinct row of the normalized data
    matches = (seen[:, None, :] == everything[None, :, :]).all(-1)
    assert matches.sum(1).min() >= 1 and len(set(matches.float().argmax(1).tolist())) == 90
    small = list(islice(shuffled_batches(data.subset(slice(0, 7)), 30, seed=0), 2))
    assert all(len(y) == 7 for _, y in small)  # a batch larger than the data takes all of it
