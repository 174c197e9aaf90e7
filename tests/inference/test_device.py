"""Images and convolutions go channels_last on every device; the layout changes speed, not results."""

import warnings

import torch

from tests.training.tiny_run import TINY_MODEL
from timam.inference.device import model_to, to_device, to_device_images
from timam.models.timam import TimamModel

CPU = torch.device("cpu")


def tiny_model() -> TimamModel:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        return TimamModel(TINY_MODEL).eval()


def test_model_to_puts_every_convolution_channels_last_and_keeps_the_weights():
    model = tiny_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    moved = model_to(model, CPU)
    convolutions = [p for p in moved.parameters() if p.dim() == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    assert all(torch.equal(before[name], tensor) for name, tensor in moved.state_dict().items())


def test_images_are_moved_channels_last_on_cpu():
    images = torch.rand(3, 3, 32, 16)
    moved = to_device_images(images, CPU)
    assert moved.is_contiguous(memory_format=torch.channels_last) and torch.equal(moved, images)


def test_channels_last_embeddings_match_the_contiguous_layout():
    images = torch.rand(4, 3, 32, 16)
    model = tiny_model()
    with torch.no_grad():
        contiguous = model.image_encoder(images)
        model = model_to(model, CPU)
        channels_last = model.image_encoder(to_device_images(images, CPU))
    assert channels_last.shape == contiguous.shape
    assert torch.allclose(channels_last, contiguous, atol=1e-5, rtol=1e-4)
    assert not torch.equal(channels_last, torch.zeros_like(channels_last))


def test_host_batches_reach_cuda_through_pinned_memory_without_blocking(monkeypatch):
    """The CUDA branch, run here with torch's copy recorded: pinned first, then a non-blocking copy."""
    calls: list[tuple[str, object]] = []
    original_to = torch.Tensor.to

    def pin_memory(self):
        calls.append(("pin", self.is_pinned()))
        return self.clone()

    def to(self, *args, **kwargs):
        if args and isinstance(args[0], torch.device) and args[0].type == "cuda":
            calls.append(("to", kwargs.get("non_blocking", False)))
            return self
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    batch = torch.arange(6)
    assert torch.equal(to_device(batch, torch.device("cuda")), batch)
    assert calls == [("pin", False), ("to", True)]


def test_on_the_cpu_it_is_the_tensor_itself():
    batch = torch.arange(6)
    assert to_device(batch, torch.device("cpu")) is batch
