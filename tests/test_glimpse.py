"""raccn.ops.glimpse against slow, obviously-correct references; gradients by gradcheck."""

import pytest
import torch
import torch.nn.functional as F

from raccn.ops import glimpse


def reference_aligned(images, centres_px, size, scales, factor):
    """Per-sample loop: zero-pad, slice the square, average-pool by factor**j.

    centres_px (list of (cx, cy)) in pixels, such that every square falls on pixel boundaries.
    """
    pad = size * factor ** (scales - 1) + 8
    out = []
    for b, (cx, cy) in enumerate(centres_px):
        padded = F.pad(images[b], (pad, pad, pad, pad))
        patches = []
        for j in range(scales):
            side, k = size * factor**j, factor**j
            x0, y0 = int(cx - side / 2) + pad, int(cy - side / 2) + pad
            assert x0 - pad == cx - side / 2 and y0 - pad == cy - side / 2, "not aligned"
            patch = padded[:, y0 : y0 + side, x0 : x0 + side]
            patches.append(F.avg_pool2d(patch[None], k)[0] if k > 1 else patch)
        out.append(torch.stack(patches))
    return torch.stack(out)


def to_loc(centres_px, H, W):
    c = torch.tensor(centres_px, dtype=torch.float64)
    return torch.stack([c[:, 0] / W * 2 - 1, c[:, 1] / H * 2 - 1], dim=1)


@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("size,scales,factor", [(4, 1, 2), (4, 3, 2), (6, 2, 3), (12, 3, 2)])
def test_aligned_squares_equal_slice_and_avgpool(B, size, scales, factor):
    torch.manual_seed(0)
    H, W = 37, 50  # not square: catches x/y mix-ups
    images = torch.rand(B, 2, H, W, dtype=torch.float64)
    # centres on pixel boundaries (size even) or pixel centres (odd), inside and near borders
    g = torch.Generator().manual_seed(B + size)
    half = size / 2
    centres = [
        (int(torch.randint(-5, W + 5, (1,), generator=g)) + half % 1,
         int(torch.randint(-5, H + 5, (1,), generator=g)) + half % 1)
        for _ in range(B)
    ]
    ref = reference_aligned(images, centres, size, scales, factor)
    out = glimpse(images, to_loc(centres, H, W), size, scales, float(factor))
    assert out.shape == (B, scales, 2, size, size)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_patch0_is_plain_slice_float32():
    images = torch.arange(2 * 10 * 12, dtype=torch.float32).view(2, 1, 10, 12) / 240
    loc = to_loc([(3, 5), (8, 4)], 10, 12).float()
    out = glimpse(images, loc, 4, 1)
    torch.testing.assert_close(out[0, 0], images[0, :, 3:7, 1:5])
    torch.testing.assert_close(out[1, 0], images[1, :, 2:6, 6:10])


def test_zero_padding_outside_the_image():
    images = torch.ones(1, 1, 8, 8)
    out = glimpse(images, torch.tensor([[-1.0, -1.0]]), size=4, scales=2)  # centre at (0, 0)
    p0 = out[0, 0, 0]
    assert torch.all(p0[:2, :] == 0) and torch.all(p0[:, :2] == 0)  # outside: zeros
    assert torch.all(p0[2:, 2:] == 1)
    # scale 1 covers [-4, 4)^2, pooled by 2: only the bottom-right 2x2 cells are inside
    expected = torch.zeros(4, 4)
    expected[2:, 2:] = 1
    torch.testing.assert_close(out[0, 1, 0], expected)
    # far outside: all zeros
    assert glimpse(images, torch.tensor([[5.0, -5.0]]), 4, 3).abs().max() == 0


def test_subpixel_equals_area_average_on_finer_grid():
    """Quarter-pixel centres: upsampling by 4 (nearest) puts the squares on grid boundaries,
    where area averaging is exactly slice + average-pool of the upsampled image."""
    torch.manual_seed(1)
    B, H, W, up = 3, 9, 11, 4
    images = torch.rand(B, 1, H, W, dtype=torch.float64)
    fine = images.repeat_interleave(up, 2).repeat_interleave(up, 3)
    centres = [(3.25, 4.75), (0.5, 8.0), (10.75, 0.25)]
    size, scales = 2, 2
    ref = reference_aligned(fine, [(x * up, y * up) for x, y in centres], size * up, scales, 2)
    ref = F.avg_pool2d(ref.flatten(0, 1), up).view(B, scales, 1, size, size)
    out = glimpse(images, to_loc(centres, H, W), size, scales)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_gradcheck_images_and_locations():
    torch.manual_seed(2)
    images = torch.rand(2, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    loc = (torch.rand(2, 2, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, l: glimpse(x, l, 3, 2, 2.0), (images, loc))
    assert torch.autograd.gradcheck(lambda x, l: glimpse(x, l, 2, 2, 1.5), (images, loc))


def test_location_gradient_moves_patch_towards_mass():
    """d(patch mass)/d(x) > 0 when a bright column lies just right of the glimpse."""
    images = torch.zeros(1, 1, 20, 20, dtype=torch.float64)
    images[..., 12] = 1.0
    loc = torch.tensor([[0.05, 0.0]], dtype=torch.float64, requires_grad=True)  # centre x=10.5
    glimpse(images, loc, 4, 1).sum().backward()
    assert loc.grad[0, 0] > 0 and loc.grad[0, 1].abs() < 1e-12


@pytest.mark.parametrize("kwargs,match", [
    ({"size": 0, "scales": 1}, "size"),
    ({"size": 4, "scales": 0}, "scales"),
    ({"size": 4, "scales": 2, "scale_factor": 0.5}, "scale_factor"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        glimpse(torch.rand(1, 1, 8, 8), torch.zeros(1, 2), **kwargs)


def test_wrong_shapes():
    with pytest.raises(ValueError, match="Tensor\\[B, C, H, W\\]"):
        glimpse(torch.rand(8, 8), torch.zeros(1, 2), 4, 1)
    with pytest.raises(ValueError, match="loc"):
        glimpse(torch.rand(2, 1, 8, 8), torch.zeros(3, 2), 4, 1)
