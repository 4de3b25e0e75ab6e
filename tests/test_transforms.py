"""Image, semantic mask, instance masks and boxes must stay aligned through every transform."""

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from segpipe.data.dataset import make_sample
from segpipe.data.synthetic import generate_scene
from segpipe.params import parse_params
from segpipe.transforms import build, device_spec, sample_spec

IGNORE = 255
SINGLE_STEPS = {
    "crop": {"crop_size": [48, 40], "scale": [0.3, 0.6], "hflip": 0},
    "hflip": {"hflip": 1.0},
    "vflip": {"hflip": 0, "vflip": 1.0},
    "rotation": {"hflip": 0, "rotation": 30},
    "jitter": {"hflip": 0, "color_jitter": {"p": 1.0, "brightness": 0.5, "hue": 0.1}},
    "noise_blur": {"hflip": 0, "noise_std": 0.05, "blur_p": 1.0},
    "everything": {"crop_size": [48, 48], "vflip": 0.5, "rotation": 25, "color_jitter": {"p": 0.5},
                   "noise_std": 0.02, "blur_p": 0.5},
}


def coded_sample(seed: int) -> dict:
    """A scene whose image encodes its labels: red channel = 40 * class, green = 40 * instance id."""
    scene = generate_scene(seed, 0, (64, 64), 4)
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 0] = scene.semantic * 40
    image[..., 1] = scene.instance * 40
    image[..., 2] = 200
    return make_sample(image, scene.semantic, scene.instance)


def decode_labels(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (image[0].float() / 40).round().long(), (image[1].float() / 40).round().long()


def interior(mask: torch.Tensor) -> torch.Tensor:
    """Mask pixels at least two pixels away from its edge (where interpolation of the image cannot reach)."""
    outside = (~mask).float()[None, None]
    return ~torch.nn.functional.max_pool2d(outside, 5, stride=1, padding=2)[0, 0].bool()


@pytest.mark.parametrize("name", ["crop", "hflip", "vflip", "rotation", "everything"])
def test_geometric_transforms_keep_labels_aligned(name):
    augment = parse_params({"augment": SINGLE_STEPS[name]}).augment
    transform = build(sample_spec(augment), IGNORE, with_instances=True)
    for seed in range(6):
        torch.manual_seed(seed)
        out = transform(coded_sample(seed))
        assert isinstance(out["semantic"], tv_tensors.Mask) and out["semantic"].dtype == torch.uint8
        assert out["image"].dtype == torch.uint8
        semantic = out["semantic"].long()
        cls, inst = decode_labels(out["image"])
        labelled = semantic != IGNORE
        if name == "rotation" or name == "everything":
            # pixels the rotation exposed are ignore in the mask, and black (blue 0) in the image
            assert ((out["image"][2] < 80) <= ~labelled).float().mean() > 0.97
        # interior pixels agree exactly; edges may differ by interpolation of the image only
        agree = (cls == semantic)[labelled].float().mean()
        assert agree > 0.9, f"{name}: only {agree:.3f} of labelled pixels agree"
        masks, boxes = out["masks"], out["boxes"]
        assert len(masks) == len(boxes) == len(out["labels"])
        for mask, box, label in zip(masks.bool(), boxes, out["labels"], strict=True):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            inside = interior(mask)
            assert (semantic[inside] == label).all()
            assert (inst[inside] > 0).all()
            if name in ("hflip", "vflip", "crop"):
                # the box still frames the mask (to within the pixel grid of a resize)
                assert xs.min() >= box[0] - 2 and xs.max() <= box[2] + 2
                assert ys.min() >= box[1] - 2 and ys.max() <= box[3] + 2


@pytest.mark.parametrize("name", ["jitter", "noise_blur"])
def test_photometric_transforms_leave_labels_alone(name):
    augment = parse_params({"augment": SINGLE_STEPS[name]}).augment
    transform = build(sample_spec(augment) + device_spec(augment, train=True), IGNORE)
    sample = coded_sample(0)
    sample.pop("masks"), sample.pop("boxes"), sample.pop("labels")
    before = sample["semantic"].clone()
    out = transform(sample)
    assert torch.equal(out["semantic"], before)
    assert out["image"].dtype == torch.float32


def test_device_policy_normalises_whole_batches():
    augment = parse_params({"augment": {"noise_std": 0.1}}).augment
    batch = torch.stack([coded_sample(i)["image"] for i in range(3)])
    mean, std = torch.tensor(augment.normalize.mean).view(3, 1, 1), torch.tensor(augment.normalize.std).view(3, 1, 1)
    expected = (batch.float() / 255 - mean) / std
    out = build(device_spec(augment, train=False), IGNORE)(batch)
    assert out.shape == batch.shape and torch.allclose(out, expected, atol=1e-6)
    noisy = build(device_spec(augment, train=True), IGNORE)(batch)
    assert 0.01 < (noisy - expected).abs().mean() < 0.2 / min(augment.normalize.std)


def test_policy_is_plain_data():
    import json

    spec = sample_spec(parse_params({"augment": SINGLE_STEPS["everything"]}).augment)
    assert json.loads(json.dumps(spec)) == spec
    assert [s["op"] for s in spec][:4] == ["RandomResizedCrop", "RandomHorizontalFlip", "RandomVerticalFlip",
                                          "RandomRotation"]


def test_instance_classes_and_crowd_come_from_the_table():
    semantic = np.zeros((20, 20), np.uint8)
    instance = np.zeros((20, 20), np.uint16)
    instance[2:8, 2:8], instance[10:18, 10:18] = 1, 2
    semantic[10:18, 10:18] = 5
    table = [{"id": 1, "category": 3, "iscrowd": True}, {"id": 2, "category": 5, "iscrowd": False},
             {"id": 0, "category": 4, "iscrowd": False}]  # an object that was never painted
    sample = make_sample(np.zeros((20, 20, 3), np.uint8), semantic, instance, table)
    assert sample["labels"].tolist() == [3, 5] and sample["iscrowd"].tolist() == [True, False]
    assert make_sample(np.zeros((20, 20, 3), np.uint8), semantic, instance)["labels"].tolist() == [0, 5]


def test_after_a_crop_boxes_come_from_the_masks_and_slivers_are_dropped():
    from torchvision.ops import masks_to_boxes

    semantic = np.zeros((40, 40), np.uint8)
    instance = np.zeros((40, 40), np.uint16)
    instance[5:30, 5:30] = 1  # a large object
    instance[37:40, 0:3] = 2  # a 3x3 corner object: any crop leaves at most 9 pixels of it
    sample = make_sample(np.zeros((40, 40, 3), np.uint8), semantic, instance)
    transform = build([{"op": "RandomResizedCrop", "size": [40, 40], "scale": [0.5, 0.6]}], IGNORE,
                      with_instances=True, min_instance_pixels=12)
    for seed in range(5):
        torch.manual_seed(seed)
        out = transform({k: v.clone() for k, v in sample.items()})
        masks = out["masks"].bool()
        assert len(masks) == len(out["labels"]) == len(out["iscrowd"]) == len(out["boxes"])
        assert (masks.flatten(1).sum(1) >= 12).all()
        assert torch.equal(out["boxes"], masks_to_boxes(masks)) if len(masks) else len(out["boxes"]) == 0
