"""raccn.ops.boxcar_mask and raccn.ops.zoom against slow, obviously-correct references;
gradients by gradcheck, by the analytic derivative of the mask and by gradient routing."""

import math

import pytest
import torch
import torch.nn.functional as F

from raccn.ops import boxcar_mask, zoom


def h(z, k):
    return 1.0 / (1.0 + torch.exp(-k * z))


def reference_mask(boxes, H, W, k):
    """Per-sample, per-pixel loop of the paper's Eq. (4) at pixel centres (autograd-friendly)."""
    out = []
    for b in range(boxes.shape[0]):
        tx, ty, tl = boxes[b]
        rows = []
        for i in range(H):
            y = i + 0.5
            my = h(y - (ty - tl), k) - h(y - (ty + tl), k)
            rows.append(torch.stack([
                (h(j + 0.5 - (tx - tl), k) - h(j + 0.5 - (tx + tl), k)) * my for j in range(W)
            ]))
        out.append(torch.stack(rows))
    return torch.stack(out)


def reference_zoom(images, boxes, n, k, grid_grad):
    """Per-sample, per-output-pixel loop: mask, then hand-written bilinear sampling at
    x_u = tx - tl + (u + 0.5) 2 tl / n clamped to [tx - tl + 0.5, tx + tl - 0.5] (tl >= 0.5),
    zero outside the image. The grid uses boxes.detach() unless grid_grad."""
    B, C, H, W = images.shape
    att = images * reference_mask(boxes, H, W, k)[:, None]
    grid_boxes = boxes if grid_grad else boxes.detach()
    zero = images.new_zeros(C)

    def pixel(b, i, j):
        return att[b, :, i, j] if 0 <= i < H and 0 <= j < W else zero

    def coord(t, l, u):
        c = t - l + (u + 0.5) * 2 * l / n
        return torch.minimum(torch.maximum(c, t - l + 0.5), t + l - 0.5)

    out = []
    for b in range(B):
        tx, ty, tl = grid_boxes[b]
        rows = []
        for v in range(n):
            fy = coord(ty, tl, v) - 0.5  # pixel-centre coordinates
            i0 = math.floor(fy.item())
            ay = fy - i0
            row = []
            for u in range(n):
                fx = coord(tx, tl, u) - 0.5
                j0 = math.floor(fx.item())
                ax = fx - j0
                row.append(
                    (1 - ay) * ((1 - ax) * pixel(b, i0, j0) + ax * pixel(b, i0, j0 + 1))
                    + ay * ((1 - ax) * pixel(b, i0 + 1, j0) + ax * pixel(b, i0 + 1, j0 + 1))
                )
            rows.append(torch.stack(row, dim=-1))  # (C, n)
        out.append(torch.stack(rows, dim=-2))  # (C, n, n)
    return torch.stack(out)


# ----------------------------------------------------------------------------- boxcar_mask


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("k", [0.7, 10.0])
def test_mask_equals_per_pixel_loop(B, k):
    torch.manual_seed(B)
    H, W = 7, 11  # not square: catches x/y mix-ups
    boxes = torch.stack([torch.rand(B) * W, torch.rand(B) * H, 0.5 + torch.rand(B) * 4], 1).double()
    out = boxcar_mask(boxes, H, W, k)
    assert out.shape == (B, H, W) and out.dtype == torch.float64
    torch.testing.assert_close(out, reference_mask(boxes, H, W, k), rtol=0, atol=1e-12)


def test_mask_inside_outside_edges():
    H, W = 20, 30
    # square [4.5, 14.5] x [6.5, 16.5]: its edges pass through pixel centres
    boxes = torch.tensor([[9.5, 11.5, 5.0]], dtype=torch.float64)
    m = boxcar_mask(boxes, H, W, k=10.0)[0]  # (H, W), m[y, x]
    assert m[11, 9] > 1 - 1e-6  # centre
    assert m[8, 7] > 1 - 1e-6  # 3 px inside
    assert m[0, 0] < 1e-12 and m[11, 25] < 1e-12 and m[1, 9] < 1e-12  # far outside
    # on the left edge (x = 4.5 at column 4), deep inside in y: 0.5
    half, quarter = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.25, dtype=torch.float64)
    torch.testing.assert_close(m[11, 4], half, rtol=0, atol=1e-6)
    # on the bottom edge (y = 16.5 at row 16), deep inside in x: 0.5; on a corner: 0.25
    torch.testing.assert_close(m[16, 9], half, rtol=0, atol=1e-6)
    torch.testing.assert_close(m[16, 14], quarter, rtol=0, atol=1e-6)
    # separable (outer product of a column and a row) and symmetric about the centre
    torch.testing.assert_close(m, m[:, 9:10] * m[11:12, :] / m[11, 9], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(m[11, 4:15], m[11, 4:15].flip(0), rtol=0, atol=1e-15)
    torch.testing.assert_close(m[6:17, 9], m[6:17, 9].flip(0), rtol=0, atol=1e-15)


def test_mask_gradcheck():
    boxes = torch.tensor([[3.3, 2.6, 1.7], [5.1, 4.2, 2.4]], dtype=torch.float64)
    boxes.requires_grad_()
    assert torch.autograd.gradcheck(lambda b: boxcar_mask(b, 6, 9, k=3.0), (boxes,))


@pytest.mark.parametrize("k", [2.0, 10.0])
def test_mask_gradient_equals_analytic_derivative(k):
    """VJP of autograd vs the paper's derivative, with h' = k h (1 - h):
    dM/dtx = [-h'(x - tx + tl) + h'(x - tx - tl)] Y
    dM/dty = X [-h'(y - ty + tl) + h'(y - ty - tl)]
    dM/dtl = [h'(x - tx + tl) + h'(x - tx - tl)] Y + X [h'(y - ty + tl) + h'(y - ty - tl)]"""
    torch.manual_seed(3)
    B, H, W = 3, 8, 13
    boxes = torch.stack([torch.rand(B) * W, torch.rand(B) * H, 1 + torch.rand(B) * 3], 1).double()
    weight = torch.randn(B, H, W, dtype=torch.float64)
    boxes.requires_grad_()
    (boxcar_mask(boxes, H, W, k) * weight).sum().backward()

    tx, ty, tl = (c[:, None].detach() for c in boxes.unbind(1))
    x = torch.arange(W, dtype=torch.float64) + 0.5
    y = torch.arange(H, dtype=torch.float64) + 0.5
    hp = lambda z: k * h(z, k) * (1 - h(z, k))
    X = h(x - tx + tl, k) - h(x - tx - tl, k)  # (B, W)
    Y = h(y - ty + tl, k) - h(y - ty - tl, k)  # (B, H)
    dX_dtx = -hp(x - tx + tl) + hp(x - tx - tl)
    dY_dty = -hp(y - ty + tl) + hp(y - ty - tl)
    dX_dtl = hp(x - tx + tl) + hp(x - tx - tl)
    dY_dtl = hp(y - ty + tl) + hp(y - ty - tl)
    outer = lambda a, b: a[:, None, :] * b[:, :, None]  # (B, W) x (B, H) -> (B, H, W)
    dM = torch.stack([
        outer(dX_dtx, Y), outer(X, dY_dty), outer(dX_dtl, Y) + outer(X, dY_dtl)
    ], dim=1)  # (B, 3, H, W)
    analytic = (dM * weight[:, None]).sum(dim=(2, 3))
    torch.testing.assert_close(boxes.grad, analytic, rtol=1e-10, atol=1e-12)
    assert analytic.abs().max() > 1e-3  # the comparison is not between zeros


def test_mask_dtype_and_no_host_sync():
    assert boxcar_mask(torch.rand(2, 3), 4, 5).dtype == torch.float32
    # meta tensors have no values: any .item() or data-dependent `if` would raise
    assert boxcar_mask(torch.empty(2, 3, device="meta"), 4, 5).shape == (2, 4, 5)


@pytest.mark.parametrize("args,match", [
    ((torch.rand(2, 4), 4, 4), "Tensor\\[B, 3\\]"),
    ((torch.rand(3), 4, 4), "Tensor\\[B, 3\\]"),
    ((torch.ones(2, 3, dtype=torch.long), 4, 4), "floating-point"),
    ((torch.rand(2, 3), 0, 4), "height"),
    ((torch.rand(2, 3), 4, 2.5), "width"),
])
def test_mask_invalid_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        boxcar_mask(*args)


@pytest.mark.parametrize("k", [0.0, -1.0, float("inf"), float("nan")])
def test_mask_invalid_k(k):
    with pytest.raises(ValueError, match="k must be > 0"):
        boxcar_mask(torch.rand(1, 3), 4, 4, k=k)


# ----------------------------------------------------------------------------- zoom


# For out sizes 5, 6, 7 every sample position of these boxes is >= 0.02 px away from a pixel
# centre (where bilinear sampling has a kink) and from the clamp bounds, so finite differences
# are well conditioned; n=7 (both boxes) and n=6 (first box) clamp the outermost samples.
GRAD_BOXES = [[4.3, 3.7, 2.6], [6.3, 5.3, 3.2]]


def test_zoom_equals_reference_loop():
    torch.manual_seed(4)
    images = torch.rand(3, 2, 9, 10, dtype=torch.float64)
    boxes = torch.tensor([[4.3, 3.7, 2.6], [8.9, 1.2, 3.1], [1.1, 7.6, 0.8]], dtype=torch.float64)
    for n in (3, 5, 8):  # 8: some samples clamped
        out = zoom(images, boxes, n, k=4.0)
        assert out.shape == (3, 2, n, n)
        ref = reference_zoom(images, boxes, n, 4.0, grid_grad=False)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("grid_grad", [False, True])
def test_zoom_gradcheck_images(grid_grad):
    torch.manual_seed(5)
    images = torch.rand(2, 2, 9, 10, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor(GRAD_BOXES, dtype=torch.float64)
    for n in (5, 7):  # 7 clamps the outermost samples of both boxes
        assert torch.autograd.gradcheck(
            lambda x, n=n: zoom(x, boxes, n, k=3.0, grid_grad=grid_grad), (images,)
        )


def test_zoom_gradcheck_images_and_boxes_grid_grad():
    """grid_grad=True: the full derivative, so plain gradcheck applies to both inputs."""
    torch.manual_seed(5)
    images = torch.rand(2, 2, 9, 10, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor(GRAD_BOXES, dtype=torch.float64, requires_grad=True)
    for n in (5, 7):
        assert torch.autograd.gradcheck(
            lambda x, b, n=n: zoom(x, b, n, k=3.0, grid_grad=True), (images, boxes)
        )


def test_zoom_box_jacobian_without_grid_grad_is_mask_only_finite_difference():
    """grid_grad=False is (by design) not the derivative of zoom itself, so gradcheck does not
    apply to boxes. It is the derivative of G(b) = S_b0(X ⊙ M(b)) with the sampling S frozen at
    b0; since zoom multiplies by M(b0) first, S_b0(Y) = zoom(Y / M(b0), b0). Compare autograd's
    Jacobian with central finite differences of G."""
    torch.manual_seed(5)
    B, C, H, W, n, k = 2, 2, 9, 10, 6, 3.0
    images = torch.rand(B, C, H, W, dtype=torch.float64)
    b0 = torch.tensor(GRAD_BOXES, dtype=torch.float64)
    m0 = boxcar_mask(b0, H, W, k)[:, None]

    def G(b):
        return zoom(images * boxcar_mask(b, H, W, k)[:, None] / m0, b0, n, k)

    torch.testing.assert_close(G(b0), zoom(images, b0, n, k), rtol=1e-12, atol=1e-14)
    eps = 1e-6
    numeric = torch.stack([
        (G(b0 + eps * e.view(B, 3)) - G(b0 - eps * e.view(B, 3))) / (2 * eps)
        for e in torch.eye(B * 3, dtype=torch.float64)
    ], dim=-1)  # (B, C, n, n, B*3)
    analytic = torch.autograd.functional.jacobian(lambda b: zoom(images, b, n, k), b0)
    torch.testing.assert_close(analytic.flatten(-2), numeric, rtol=1e-6, atol=1e-8)
    assert numeric.abs().max() > 1e-2


def test_zoom_box_gradient_routing():
    """grid_grad=False: d sum(w ⊙ zoom)/d boxes is the mask-only derivative (the grid built
    from detached boxes); grid_grad=True adds the sampling-position term, so they differ."""
    torch.manual_seed(6)
    images = torch.rand(2, 3, 9, 10, dtype=torch.float64)
    n = 6
    weight = torch.randn(2, 3, n, n, dtype=torch.float64)
    grads = {}
    for grid_grad in (False, True):
        boxes = torch.tensor(GRAD_BOXES, dtype=torch.float64, requires_grad=True)
        (zoom(images, boxes, n, k=3.0, grid_grad=grid_grad) * weight).sum().backward()
        ref_boxes = torch.tensor(GRAD_BOXES, dtype=torch.float64, requires_grad=True)
        (reference_zoom(images, ref_boxes, n, 3.0, grid_grad) * weight).sum().backward()
        torch.testing.assert_close(boxes.grad, ref_boxes.grad, rtol=1e-9, atol=1e-12)
        grads[grid_grad] = boxes.grad
    assert grads[False].abs().min() > 1e-4  # the mask alone reaches every box coordinate
    assert (grads[True] - grads[False]).abs().max() > 1e-2  # the switch does something


def test_zoom_image_gradient_flows_in_both_modes():
    for grid_grad in (False, True):
        images = torch.rand(1, 1, 8, 8, requires_grad=True)
        zoom(images, torch.tensor([[4.0, 4.0, 2.0]]), 4, grid_grad=grid_grad).sum().backward()
        assert images.grad[0, 0, 2:6, 2:6].min() > 0 and images.grad[0, 0, 0].abs().max() < 1e-6


def slice_and_resize(images, corners, side, n):
    """Per-sample loop: zero-pad, slice the square at (x0, y0) of the given side, F.interpolate."""
    pad = 2 * max(side) + 2
    padded = F.pad(images, (pad, pad, pad, pad))
    out = []
    for b, ((x0, y0), s) in enumerate(zip(corners, side)):
        crop = padded[b : b + 1, :, y0 + pad : y0 + pad + s, x0 + pad : x0 + pad + s]
        out.append(F.interpolate(crop, size=(n, n), mode="bilinear", align_corners=False)[0])
    return torch.stack(out)


@pytest.mark.parametrize("n,corners,side", [
    (12, [(3, 5), (10, 0), (0, 14)], [6, 6, 6]),  # upsampling x2
    (14, [(2, 3), (17, 12), (9, 9)], [4, 4, 4]),  # upsampling x3.5
    (4, [(1, 2), (6, 4), (12, 7)], [8, 10, 6]),  # downsampling, different sides per sample
    (9, [(5, 1), (7, 11), (0, 0)], [6, 3, 12]),  # mixed, odd side (half-pixel centre)
    (8, [(-3, 4), (18, -2), (20, 16)], [6, 8, 5]),  # partly outside the image: zeros there
])
def test_zoom_aligned_box_equals_interpolate_of_slice(n, corners, side):
    torch.manual_seed(7)
    images = torch.rand(3, 2, 19, 23, dtype=torch.float64)
    boxes = torch.tensor([[x0 + s / 2, y0 + s / 2, s / 2] for (x0, y0), s in zip(corners, side)],
                         dtype=torch.float64)
    out = zoom(images, boxes, n, k=1000.0)
    torch.testing.assert_close(out, slice_and_resize(images, corners, side, n), rtol=0, atol=1e-12)


def test_zoom_aligned_float32_and_dtype():
    images = torch.rand(2, 3, 16, 20)
    boxes = torch.tensor([[6.0, 8.0, 4.0], [13.0, 7.0, 3.0]], dtype=torch.float64)  # cast to f32
    out = zoom(images, boxes, 10, k=1000.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, slice_and_resize(images, [(2, 4), (10, 4)], [8, 6], 10))


def test_zoom_outside_is_zero_and_channels_are_independent():
    images = torch.ones(1, 3, 8, 8)
    # entirely outside: exactly zero
    assert zoom(images, torch.tensor([[-20.0, 4.0, 3.0]]), 5).abs().max() == 0
    # left half of the square outside the image: left half of the output zero, right half one
    out = zoom(images, torch.tensor([[0.0, 4.0, 4.0]]), 8, k=1000.0)
    expected = torch.cat([torch.zeros(8, 4), torch.ones(8, 4)], dim=1).expand(1, 3, 8, 8)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    # multi-channel = each channel zoomed on its own
    torch.manual_seed(8)
    images = torch.rand(2, 3, 11, 9)
    boxes = torch.tensor([[4.2, 5.7, 3.1], [3.0, 2.4, 1.9]])
    out = zoom(images, boxes, 6)
    for c in range(3):
        torch.testing.assert_close(out[:, c : c + 1], zoom(images[:, c : c + 1], boxes, 6))


def test_zoom_batch_of_one_and_batch_independence():
    torch.manual_seed(9)
    images = torch.rand(3, 2, 10, 12)
    boxes = torch.tensor([[4.2, 5.7, 3.1], [6.0, 2.4, 1.9], [9.5, 8.5, 4.0]])
    out = zoom(images, boxes, 7)
    for b in range(3):
        one = zoom(images[b : b + 1], boxes[b : b + 1], 7)
        assert one.shape == (1, 2, 7, 7)
        torch.testing.assert_close(one, out[b : b + 1])


def test_zoom_no_host_sync():
    # meta tensors have no values: any .item() or data-dependent `if` would raise
    out = zoom(torch.empty(2, 3, 16, 12, device="meta"), torch.empty(2, 3, device="meta"), 5)
    assert out.shape == (2, 3, 5, 5)


@pytest.mark.parametrize("images,boxes,out_size,k,match", [
    (torch.rand(3, 8, 8), torch.rand(3, 3), 4, 10.0, "Tensor\\[B, C, H, W\\]"),
    (torch.ones(2, 1, 8, 8, dtype=torch.uint8), torch.rand(2, 3), 4, 10.0, "floating-point"),
    (torch.rand(2, 1, 8, 8), torch.rand(3, 3), 4, 10.0, "B=2"),
    (torch.rand(2, 1, 8, 8), torch.rand(2, 4), 4, 10.0, "Tensor\\[B, 3\\]"),
    (torch.rand(2, 1, 8, 8), torch.rand(2, 3), 0, 10.0, "out_size"),
    (torch.rand(2, 1, 8, 8), torch.rand(2, 3), 4.0, 10.0, "out_size"),
    (torch.rand(2, 1, 8, 8), torch.rand(2, 3), 4, 0.0, "k must be > 0"),
])
def test_zoom_invalid_arguments(images, boxes, out_size, k, match):
    with pytest.raises(ValueError, match=match):
        zoom(images, boxes, out_size, k=k)
