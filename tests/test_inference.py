import torch

from segpipe.inference import infer


def pixelwise(x: torch.Tensor) -> torch.Tensor:
    """A 'model' whose logits at a pixel depend only on that pixel: sliding must equal whole-image."""
    return torch.cat([x[:, :1] * 2, x[:, 1:2] - x[:, 2:3], x.sum(1, keepdim=True)], dim=1)


def test_sliding_window_equals_whole_image_for_a_pixelwise_model():
    images = torch.randn(2, 3, 70, 95)
    whole = infer(pixelwise, images, "whole", 3)
    for window, stride in (((32, 32), (24, 24)), ((64, 40), (64, 40)), ((128, 128), (96, 96))):
        sliding = infer(pixelwise, images, "sliding", 3, window, stride)
        assert sliding.shape == whole.shape == (2, 3, 70, 95)
        assert torch.allclose(sliding, whole, atol=1e-6)


def test_sliding_window_covers_every_pixel_once_averaged():
    calls = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape[-2:]))
        return torch.ones(x.shape[0], 2, *x.shape[-2:])

    out = infer(counting, torch.zeros(1, 3, 50, 50), "sliding", 2, (32, 32), (20, 20))
    assert torch.equal(out, torch.ones(1, 2, 50, 50))
    assert calls and all(shape == (32, 32) for shape in calls)
