"""The shared panoptic post-processing on hand-built outputs: centre NMS, grouping by offsets, class vote, the
Panoptic FPN merge, small stuff removal; and the ground truth as segments."""

import torch

from segpipe.panoptic_postprocess import deeplab_panoptic, find_centers, fpn_panoptic, group_pixels
from segpipe.tasks.panoptic import segments, truth_map

IS_THING = torch.tensor([False, False, True, True])  # 0 sky, 1 grass (stuff); 2 disc, 3 box (things)
SETTINGS = {"center_threshold": 0.1, "nms_kernel": 3, "top_k": 10, "stuff_area": 4, "instance_score_threshold": 0.5,
            "overlap_threshold": 0.5, "mask_threshold": 0.5}


def logits_of(labels: torch.Tensor, classes: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, classes).permute(2, 0, 1).float()


def test_centres_are_local_maxima_above_the_threshold_best_first():
    heat = torch.zeros(10, 10)
    heat[2, 2], heat[2, 3], heat[7, 7], heat[5, 0] = 0.9, 0.8, 0.95, 0.05
    centres = find_centers(heat, 0.1, 3, 10)
    assert centres.tolist() == [[7, 7], [2, 2]]  # (2, 3) is suppressed by its neighbour, (5, 0) is below 0.1
    assert find_centers(heat, 0.1, 3, 1).tolist() == [[7, 7]]


def test_pixels_join_the_centre_their_offset_points_to():
    things = torch.zeros(4, 6, dtype=torch.bool)
    things[:, :] = True
    offsets = torch.zeros(2, 4, 6)
    offsets[1, :, :3] = 1.0 - torch.arange(3.0)  # left half points at column 1
    offsets[1, :, 3:] = 4.0 - torch.arange(3.0, 6.0)  # right half at column 4
    instance = group_pixels(things, offsets, torch.tensor([[1, 4], [1, 1]]))
    assert (instance[:, :3] == 2).all() and (instance[:, 3:] == 1).all()


def test_deeplab_vote_gives_each_instance_one_class_and_drops_small_stuff():
    labels = torch.zeros(8, 8, dtype=torch.int64)  # sky
    labels[4:, :] = 1  # grass
    labels[0:2, 0:2] = 1  # 4 px of grass: kept (stuff_area 4)... but it joins the big grass segment
    labels[5:8, 5:8] = 2  # a disc ...
    labels[7, 7] = 3  # ... with one pixel voted box
    labels[0, 7] = 1
    center = torch.zeros(1, 8, 8)
    center[0, 6, 6] = 1.0
    offsets = torch.zeros(2, 8, 8)
    result = deeplab_panoptic(logits_of(labels), center, offsets, IS_THING, {**SETTINGS, "stuff_area": 20})
    assert (result.category[5:8, 5:8] == 2).all() and (result.instance[5:8, 5:8] == 1).all()
    assert result.instance[:5].eq(0).all() and (result.category[0:4, 2:7] == 0).all()
    assert (result.category[0:2, 0:2] == 1).all()  # grass has 31 free pixels in all: kept
    tiny = labels.clone()
    tiny[4:, :] = 0
    tiny[0:2, 0:2] = 1  # now grass has only 4 + 1 pixels: VOID
    tiny[5:8, 5:8] = 2
    result = deeplab_panoptic(logits_of(tiny), center, offsets, IS_THING, {**SETTINGS, "stuff_area": 20})
    assert (result.category[0:2, 0:2] == -1).all() and result.category[0, 7] == -1


def test_deeplab_thing_pixels_without_any_centre_are_void():
    labels = torch.full((6, 6), 2)
    result = deeplab_panoptic(logits_of(labels), torch.zeros(1, 6, 6), torch.zeros(2, 6, 6), IS_THING, SETTINGS)
    assert (result.category == -1).all() and (result.instance == 0).all()


def test_fpn_merge_places_by_score_skips_overlaps_and_fills_stuff():
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, 0, 0:4, 0:4] = 0.9  # best: placed first
    masks[1, 0, 1:5, 1:5] = 0.9  # 9 of its 16 px taken (> 0.5): skipped
    masks[2, 0, 2:6, 5:8] = 0.9  # 2 of 12 taken? none: placed
    boxes = torch.zeros(3, 4)
    result = fpn_panoptic(boxes, torch.tensor([2, 3, 3]), torch.tensor([0.9, 0.8, 0.7]), masks,
                          logits_of(torch.ones(8, 8, dtype=torch.int64)), IS_THING, SETTINGS)
    assert (result.instance[0:4, 0:4] == 1).all() and (result.category[0:4, 0:4] == 2).all()
    assert (result.instance[2:6, 5:8] == 2).all() and (result.category[2:6, 5:8] == 3).all()
    assert (result.category[6:, :] == 1).all() and int(result.instance.max()) == 2
    low = fpn_panoptic(boxes, torch.tensor([2, 3, 3]), torch.tensor([0.4, 0.3, 0.2]), masks,
                       logits_of(torch.ones(8, 8, dtype=torch.int64)), IS_THING, SETTINGS)
    assert (low.instance == 0).all() and (low.category == 1).all()  # below the score threshold: stuff only


def test_ground_truth_segments_void_and_crowd():
    semantic = torch.zeros(6, 6, dtype=torch.uint8)
    semantic[3:, :] = 1
    semantic[0, 0] = 255  # ignore
    semantic[5, 5] = 2  # a disc pixel that no instance covers: VOID
    masks = torch.zeros(2, 6, 6, dtype=torch.uint8)
    masks[0, 1:3, 1:3] = 1
    masks[1, 3:5, 3:5] = 1
    target = {"masks": masks, "labels": torch.tensor([2, 3]), "iscrowd": torch.tensor([False, True])}
    truth, crowd = truth_map(semantic, target, IS_THING, 255)
    assert truth.category[0, 0] == -1 and truth.category[5, 5] == -1 and crowd == {2}
    ids, found = segments(truth, 4, crowd)
    assert ids[0, 0] == 0 and ids[1, 1] == 5 and ids[3, 3] == 6 and ids[0, 3] == 1 and ids[5, 0] == 2
    assert {(s.id, s.category, s.iscrowd, s.area) for s in found} == {(1, 0, False, 13), (2, 1, False, 13),
                                                                     (5, 2, False, 4), (6, 3, True, 4)}
