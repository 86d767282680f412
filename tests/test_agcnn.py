"""raccn.ops.components (batched connected components) against scipy.ndimage.label, and
raccn.models.AGCNN: heat map, crop box from a planted map, the crop itself, forward/backward and
the gradient routing of the three branches."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from raccn.models import AGCNN
from raccn.ops.components import label_components, largest_component_boxes

STRUCTURE = {8: np.ones((3, 3)), 4: ndimage.generate_binary_structure(2, 1)}


def reference_boxes(mask, connectivity):
    """Per-sample loop with SciPy: label, the largest component (ties: the one whose last cell
    comes first in raster order), its bounding box (x0, y0, x1, y1), exclusive ends."""
    out = []
    for m in mask.numpy():
        labels, n = ndimage.label(m, structure=STRUCTURE[connectivity])
        if n == 0:
            out.append([0, 0, m.shape[1], m.shape[0]])
            continue
        flat = labels.ravel()
        comps = [(-(flat == c).sum(), np.flatnonzero(flat == c).max(), c) for c in range(1, n + 1)]
        c = min(comps)[2]
        ys, xs = np.nonzero(labels == c)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(out, dtype=torch.float32)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("density", [0.3, 0.5, 0.7])
def test_components_equal_scipy(connectivity, density):
    torch.manual_seed(int(density * 10) + connectivity)
    mask = torch.rand(16, 7, 9) < density  # not square: catches x/y mix-ups
    labels = label_components(mask, connectivity)
    assert labels.dtype == torch.int64 and ((labels > 0) == mask).all()
    for b in range(16):  # the same partition as SciPy's
        ref, _ = ndimage.label(mask[b].numpy(), structure=STRUCTURE[connectivity])
        ours = labels[b].numpy()
        pairs = {(int(r), int(o)) for r, o in zip(ref.ravel(), ours.ravel())}
        assert len(pairs) == len({r for r, _ in pairs}) == len({o for _, o in pairs})
    torch.testing.assert_close(largest_component_boxes(mask, connectivity),
                               reference_boxes(mask, connectivity), rtol=0, atol=0)


def test_snake_needs_many_rounds_and_diagonals_depend_on_connectivity():
    snake = torch.zeros(1, 7, 7, dtype=torch.bool)
    snake[0, 0::2, :] = True  # rows 0, 2, 4, 6
    snake[0, 1, 6] = snake[0, 3, 0] = snake[0, 5, 6] = True  # joined at alternating ends: one path
    snake[0, 6, 0:2] = False
    torch.testing.assert_close(largest_component_boxes(snake), torch.tensor([[0.0, 0.0, 7.0, 7.0]]))
    assert label_components(snake).unique().numel() == 2  # background + one component
    diagonal = torch.eye(5, dtype=torch.bool)[None] | torch.zeros(1, 5, 5, dtype=torch.bool)
    diagonal[0, 0, 4] = diagonal[0, 1, 4] = True  # a 2-cell vertical piece
    assert largest_component_boxes(diagonal, 8).tolist() == [[0.0, 0.0, 5.0, 5.0]]
    assert largest_component_boxes(diagonal, 4).tolist() == [[4.0, 0.0, 5.0, 2.0]]


def test_empty_mask_gives_the_whole_map_and_batch_independence():
    mask = torch.zeros(3, 4, 6, dtype=torch.bool)
    mask[1, 1:3, 2:5] = True
    boxes = largest_component_boxes(mask)
    assert boxes.tolist() == [[0, 0, 6, 4], [2, 1, 5, 3], [0, 0, 6, 4]]
    for b in range(3):
        assert torch.equal(largest_component_boxes(mask[b : b + 1]), boxes[b : b + 1])


def test_components_invalid_arguments():
    with pytest.raises(ValueError, match="bool Tensor"):
        label_components(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        label_components(torch.ones(1, 4, 4, dtype=torch.bool), 6)


# ----------------------------------------------------------------------------- AGCNN


def small(**kw):
    return AGCNN(5, backbone="small_vgg_bn", **{"local_size": 32, **kw})


def test_heatmap_and_crop_box_from_a_planted_map():
    net = small(threshold=0.5)
    f = torch.zeros(2, 3, 4, 4)
    f[0, 1, 1:3, 2] = -8.0  # |f| counts: a 2x1 blob at rows 1-2, column 2
    f[0, 0, 3, 0] = 6.0  # a weaker, single cell (above τ as well, but smaller)
    f[0, 2] += 1.0  # the minimum becomes 1: normalised (|f| - 1) / 7
    f[1, 0] = 3.0  # constant: all zeros, nothing above τ -> the whole image
    heat = net.heatmap(f)
    torch.testing.assert_close(heat[0, 1, 2], torch.tensor(1.0))
    torch.testing.assert_close(heat[0, 3, 0], torch.tensor(5 / 7))
    assert heat[1].abs().max() == 0
    boxes = net.crop_boxes(heat, 64, 48)  # 64 rows, 48 columns: a cell is 12 x 16 pixels
    torch.testing.assert_close(boxes, torch.tensor([[24.0, 16.0, 36.0, 48.0], [0.0, 0.0, 48.0, 64.0]]))


def test_crop_is_the_box_resized():
    torch.manual_seed(0)
    net = small().eval()
    images = torch.rand(2, 3, 64, 64)
    box = torch.tensor([[16.0, 8.0, 48.0, 40.0], [0.0, 0.0, 64.0, 64.0]])
    net.crop_boxes = lambda heat, h, w: box
    out = net(images)
    torch.testing.assert_close(out.crops[0], images[0, :, 8:40, 16:48])  # 32 px at 32 px: the slice
    # 64 px to 32: roi_align averages 2x2 samples per output pixel: the 2x2 average pool
    torch.testing.assert_close(out.crops[1], F.avg_pool2d(images[1:2], 2)[0])


def test_forward_backward_and_branch_routing():
    torch.manual_seed(0)
    net = small()
    x, y = torch.rand(3, 3, 64, 64), torch.tensor([0, 1, 2])
    out = net(x)
    assert [z.shape for z in out[:3]] == [(3, 5)] * 3
    assert out.boxes.shape == (3, 4) and out.heatmap.shape == (3, 4, 4) and out.crops.shape == (3, 3, 32, 32)
    assert (out.boxes[:, 2:] > out.boxes[:, :2]).all() and (out.boxes >= 0).all() and (out.boxes <= 64).all()
    F.cross_entropy(out.local_logits, y).backward()  # the local loss: the crop is a hard selection
    grads = {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("local_trunk") for n in grads) and not any(n.startswith("global") for n in grads)
    net.zero_grad()
    F.cross_entropy(net(x).fused_logits, y).backward()
    grads = {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {n.split(".")[0] for n in grads} == {"global_trunk", "local_trunk", "fusion_classifier"}
    assert [m for b in ("global", "local", "fusion") for m in net.branches(b)] == [
        net.global_trunk, net.global_classifier, net.local_trunk, net.local_classifier, net.fusion_classifier]


@pytest.mark.parametrize("kwargs,match", [
    ({"threshold": 1.0}, "threshold must be in"),
    ({"connectivity": 6}, "connectivity must be 4 or 8"),
    ({"local_size": 0}, "local_size must be"),
])
def test_agcnn_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_global_size_views_an_area_average_and_crops_at_full_resolution():
    torch.manual_seed(0)
    net = small(global_size=32).eval()
    images = torch.rand(2, 3, 64, 64)
    seen = []
    net.global_trunk.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    box = torch.tensor([[16.0, 8.0, 48.0, 40.0]]).expand(2, 4)  # in pixels of the 64-px images
    net.crop_boxes = lambda heat, h, w: box if (h, w) == (64, 64) else None
    out = net(images)
    torch.testing.assert_close(seen[0], F.avg_pool2d(images, 2))  # the area average to 32 px
    torch.testing.assert_close(out.crops, images[:, :, 8:40, 16:48])  # cut from the 64-px images
    g = net.global_branch(images)
    torch.testing.assert_close(g.logits, out.global_logits)
    assert g.features.shape == (2, 256, 2, 2)
    with pytest.raises(ValueError, match="global_size"):
        net(torch.rand(1, 3, 16, 16))
