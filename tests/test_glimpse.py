"""raccn.ops.glimpse against slow, obviously-correct references; gradients by gradcheck."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from raccn.ops import glimpse
from raccn.ops.glimpse import integral_image, prepare_glimpses


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
    images = torch.ones(1, 1, 8, 8, dtype=torch.float64)  # exact to 1e-12; float32 to rounding
    out = glimpse(images, torch.tensor([[-1.0, -1.0]], dtype=torch.float64), size=4, scales=2)
    # centre at (0, 0): scale 0 covers [-2, 2)^2, only its bottom-right 2x2 cells are inside;
    # scale 1 covers [-4, 4)^2 pooled by 2: again only the bottom-right 2x2 cells are inside
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[2:, 2:] = 1
    torch.testing.assert_close(out[0, 0, 0], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[0, 1, 0], expected, rtol=0, atol=1e-12)
    # far outside: all zeros
    far = glimpse(images, torch.tensor([[5.0, -5.0]], dtype=torch.float64), 4, 3)
    torch.testing.assert_close(far, torch.zeros_like(far), rtol=0, atol=1e-12)


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


def integral_reference(images, loc, size, scales, factor):
    """Area means straight from the summed-area table, one cell corner at a time (float64)."""
    B, C, H, W = images.shape
    S = integral_image(images.double())

    def at(b, x, y):  # S at a real point: bilinear between integer corners, constant outside
        x, y = min(max(x, 0.0), W), min(max(y, 0.0), H)
        i, k = min(int(x), W - 1), min(int(y), H - 1)
        fx, fy = x - i, y - k
        t = S[b, :, k : k + 2, i : i + 2]
        return ((1 - fy) * ((1 - fx) * t[:, 0, 0] + fx * t[:, 0, 1])
                + fy * ((1 - fx) * t[:, 1, 0] + fx * t[:, 1, 1]))

    out = torch.zeros(B, scales, C, size, size, dtype=torch.float64)
    for b in range(B):
        cx, cy = (float(loc[b, 0]) + 1) / 2 * W, (float(loc[b, 1]) + 1) / 2 * H
        for j in range(scales):
            c = factor**j
            for r in range(size):
                for q in range(size):
                    x0, y0 = cx - size * c / 2 + q * c, cy - size * c / 2 + r * c
                    total = at(b, x0 + c, y0 + c) - at(b, x0, y0 + c) - at(b, x0 + c, y0) + at(b, x0, y0)
                    out[b, j, :, r, q] = total / (c * c)
    return out


@pytest.mark.parametrize("size,scales,factor", [(3, 3, 2.0), (4, 2, 3.0), (3, 3, 1.5), (2, 1, 1.0)])
def test_subpixel_random_locations_against_summed_area_reference(size, scales, factor):
    """Both paths ("box" for integer cell sides, "integral" otherwise) at arbitrary sub-pixel
    centres, inside, on and beyond the borders, against a per-cell loop over the table."""
    torch.manual_seed(3)
    images = torch.rand(3, 2, 9, 13, dtype=torch.float64)
    loc = torch.rand(3, 2, dtype=torch.float64) * 2.6 - 1.3
    source = prepare_glimpses(images, size, scales, factor)
    assert source.method == ("integral" if factor == 1.5 else "box")
    out = glimpse(images, loc, size, scales, factor, source)
    torch.testing.assert_close(out, integral_reference(images, loc, size, scales, factor), rtol=0, atol=1e-12)
    torch.testing.assert_close(glimpse(images, loc, size, scales, factor), out, rtol=0, atol=0)


def test_float32_matches_float64():
    torch.manual_seed(4)
    images = torch.rand(16, 1, 60, 60, dtype=torch.float64)
    loc = torch.rand(16, 2, dtype=torch.float64) * 2 - 1
    for factor in (2.0, 1.5):
        ref = glimpse(images, loc, 12, 3, factor)
        out = glimpse(images.float(), loc.float(), 12, 3, factor)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-5)


def test_source_must_match_the_glimpse():
    images = torch.rand(2, 1, 8, 8)
    source = prepare_glimpses(images, 4, 2, 2.0)
    with pytest.raises(ValueError, match="prepare_glimpses"):
        glimpse(images, torch.zeros(2, 2), 4, 3, 2.0, source)  # scales differ
    with pytest.raises(ValueError, match="prepare_glimpses"):
        glimpse(images, torch.zeros(2, 2), 3, 2, 2.0, source)  # size differs
    with pytest.raises(ValueError, match="prepare_glimpses"):
        glimpse(torch.rand(3, 1, 8, 8), torch.zeros(3, 2), 4, 2, 2.0, source)  # other images


def test_prepare_glimpses_runs_eagerly_under_compile(monkeypatch):
    """Inside ``torch.compile`` the per-batch planes are made eagerly at every call, not traced
    into the graph: inductor would fuse the box sums into every glimpse's sampling kernel and
    recompute them at each sampled point. The compiled glimpses still equal the eager ones."""
    glimpse_module = importlib.import_module("raccn.ops.glimpse")  # (raccn.ops.glimpse is the function)

    calls = []

    def counting_box_planes(images, cells):
        calls.append(torch.compiler.is_compiling())  # True while dynamo traces it
        return box_planes(images, cells)

    box_planes = glimpse_module.box_planes
    monkeypatch.setattr(glimpse_module, "box_planes", counting_box_planes)
    torch.manual_seed(0)
    images, loc = torch.rand(4, 1, 20, 20), torch.rand(4, 2) * 2 - 1

    def two_glimpses(images, loc):
        source = prepare_glimpses(images, 4, 3, 2.0)
        return glimpse(images, loc, 4, 3, 2.0, source) + glimpse(images, -loc, 4, 3, 2.0, source)

    torch._dynamo.reset()
    compiled = torch.compile(two_glimpses, backend="eager")
    for _ in range(3):
        out = compiled(images, loc)
    assert calls == [False, False, False]  # run eagerly at each call, never traced
    torch.testing.assert_close(out, two_glimpses(images, loc))
