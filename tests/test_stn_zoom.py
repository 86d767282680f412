"""raccn.ops.stn_zoom (the spatial-transformer cropper) against slow references, the boxcar zoom
and F.interpolate of a slice; box gradients by gradcheck, finite differences and a linear image
whose derivative is known; RA-CNN with ``cropper="stn"`` forward/backward and from the CLI."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from raccn.models import RACNN
from raccn.ops import stn_zoom, zoom
from raccn.ops.stn_zoom import stn_theta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_stn(images, boxes, n):
    """Per-sample, per-output-pixel loop of Jaderberg et al.'s Eq. (5) (bilinear kernel) at
    x_u = tx + tl (2u + 1 - n) / n, y_v = ty + tl (2v + 1 - n) / n (pixel centres at i + 0.5),
    zero outside the image; autograd-friendly in images and boxes."""
    B, C, H, W = images.shape
    zero = images.new_zeros(C)

    def pixel(b, i, j):
        return images[b, :, i, j] if 0 <= i < H and 0 <= j < W else zero

    out = []
    for b in range(B):
        tx, ty, tl = boxes[b]
        rows = []
        for v in range(n):
            fy = ty + tl * (2 * v + 1 - n) / n - 0.5
            i0 = math.floor(fy.item())
            ay = fy - i0
            row = []
            for u in range(n):
                fx = tx + tl * (2 * u + 1 - n) / n - 0.5
                j0 = math.floor(fx.item())
                ax = fx - j0
                row.append(
                    (1 - ay) * ((1 - ax) * pixel(b, i0, j0) + ax * pixel(b, i0, j0 + 1))
                    + ay * ((1 - ax) * pixel(b, i0 + 1, j0) + ax * pixel(b, i0 + 1, j0 + 1))
                )
            rows.append(torch.stack(row, dim=-1))  # (C, n)
        out.append(torch.stack(rows, dim=-2))  # (C, n, n)
    return torch.stack(out)


# For out sizes 5, 6, 7 the samples of these boxes stay >= 0.02 px away from pixel centres (the
# kinks of bilinear sampling), so finite differences are well conditioned (checked below).
GRAD_BOXES = [[4.3, 3.7, 2.6], [6.3, 5.3, 3.2]]


def sample_positions(boxes, n):
    s = (2 * torch.arange(n, dtype=torch.float64) + 1 - n) / n  # (n,)
    return torch.cat([boxes[:, 0:1] + boxes[:, 2:3] * s, boxes[:, 1:2] + boxes[:, 2:3] * s], 1)


def test_grad_boxes_keep_away_from_kinks():
    for n in (5, 6, 7):
        pos = sample_positions(torch.tensor(GRAD_BOXES, dtype=torch.float64), n) - 0.5
        assert (pos - pos.round()).abs().min() > 0.02


def test_theta_maps_the_output_corners_to_the_square():
    boxes = torch.tensor([[5.0, 3.0, 2.0]], dtype=torch.float64)
    theta = stn_theta(boxes, 8, 10)  # H=8, W=10
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)  # (x_t, y_t, 1)
    xs = (theta[0] @ corners.T).T  # normalised source points
    pixels = (xs + 1) / 2 * torch.tensor([10.0, 8.0], dtype=torch.float64)
    torch.testing.assert_close(pixels, torch.tensor([[3.0, 1.0], [7.0, 5.0]], dtype=torch.float64))


def test_stn_zoom_equals_reference_loop():
    torch.manual_seed(4)
    images = torch.rand(3, 2, 9, 10, dtype=torch.float64)
    boxes = torch.tensor([[4.3, 3.7, 2.6], [8.9, 1.2, 3.1], [1.1, 7.6, 0.8]], dtype=torch.float64)
    for n in (3, 5, 8):  # 3: downsampling; 8: upsampling; boxes partly outside the image
        out = stn_zoom(images, boxes, n)
        assert out.shape == (3, 2, n, n) and out.dtype == torch.float64
        torch.testing.assert_close(out, reference_stn(images, boxes, n), rtol=0, atol=1e-12)


def test_whole_image_at_its_own_size_is_the_identity():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    boxes = torch.tensor([[6.0, 6.0, 6.0]] * 2, dtype=torch.float64)
    torch.testing.assert_close(stn_zoom(images, boxes, 12), images, rtol=0, atol=1e-12)


def slice_and_resize(images, corners, side, n):
    """Per-sample loop: zero-pad, slice the square at (x0, y0) of the given side, F.interpolate."""
    pad = 2 * max(side) + 2
    padded = F.pad(images, (pad, pad, pad, pad))
    out = []
    for b, ((x0, y0), s) in enumerate(zip(corners, side)):
        crop = padded[b : b + 1, :, y0 + pad : y0 + pad + s, x0 + pad : x0 + pad + s]
        out.append(F.interpolate(crop, size=(n, n), mode="bilinear", align_corners=False)[0])
    return torch.stack(out)


DOWNSAMPLING = [  # side >= n: every sample within the square's pixel centres
    (4, [(1, 2), (6, 4), (12, 7)], [8, 10, 6]),
    (6, [(3, 5), (10, 0), (0, 11)], [6, 12, 7]),
    (5, [(-3, 4), (18, -2), (15, 13)], [6, 8, 9]),  # partly outside the image: zeros there
]


@pytest.mark.parametrize("n,corners,side", DOWNSAMPLING)
def test_aligned_box_without_upsampling_equals_interpolate_of_slice_and_steep_boxcar(n, corners, side):
    """For squares on pixel boundaries and side >= n the STN crop equals an explicit crop +
    resize, and the boxcar zoom with a very steep mask (whose clamp never acts then)."""
    torch.manual_seed(7)
    images = torch.rand(3, 2, 19, 23, dtype=torch.float64)
    boxes = torch.tensor([[x0 + s / 2, y0 + s / 2, s / 2] for (x0, y0), s in zip(corners, side)],
                         dtype=torch.float64)
    out = stn_zoom(images, boxes, n)
    torch.testing.assert_close(out, slice_and_resize(images, corners, side, n), rtol=0, atol=1e-12)
    torch.testing.assert_close(out, zoom(images, boxes, n, k=1000.0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("side,n", [(8, 5), (10, 4), (9, 4)])
def test_aligned_box_gradient_equals_steep_boxcar_with_grid_grad(side, n):
    """Same squares: with ``grid_grad`` the boxcar zoom's box gradient is the STN's (the steep
    mask's own term vanishes). side/n keep every sample >= 0.1 px from a pixel centre (a kink)."""
    torch.manual_seed(7)
    images = torch.rand(3, 2, 19, 23, dtype=torch.float64)
    corners = [(1, 2), (6, 4), (12, 7)]
    boxes = torch.tensor([[x0 + side / 2, y0 + side / 2, side / 2] for x0, y0 in corners],
                         dtype=torch.float64)
    pos = sample_positions(boxes, n) - 0.5
    assert (pos - pos.round()).abs().min() >= 0.1 - 1e-9
    weight = torch.randn(3, 2, n, n, dtype=torch.float64)
    grads = []
    for crop in (stn_zoom, lambda x, b, n: zoom(x, b, n, k=1000.0, grid_grad=True)):
        b = boxes.clone().requires_grad_()
        (crop(images, b, n) * weight).sum().backward()
        grads.append(b.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)
    assert grads[0].abs().max() > 1e-2


def test_upsampling_differs_from_the_boxcar_only_at_the_edges():
    """When upsampling, the boxcar zoom clamps its outermost samples to the square's extreme
    pixel centres and the STN does not (it reads one pixel beyond): inside they agree."""
    torch.manual_seed(8)
    images = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    boxes = torch.tensor([[8.0, 8.0, 2.0]], dtype=torch.float64)  # 4-px square -> 12 px
    stn, box = stn_zoom(images, boxes, 12), zoom(images, boxes, 12, k=1000.0)
    torch.testing.assert_close(stn[..., 2:-2, 2:-2], box[..., 2:-2, 2:-2], rtol=0, atol=1e-12)
    assert (stn - box)[..., 0, :].abs().max() > 1e-3


def test_gradcheck_images_and_boxes():
    torch.manual_seed(5)
    images = torch.rand(2, 2, 9, 10, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor(GRAD_BOXES, dtype=torch.float64, requires_grad=True)
    for n in (5, 7):
        assert torch.autograd.gradcheck(lambda x, b, n=n: stn_zoom(x, b, n), (images, boxes))


def test_box_jacobian_equals_finite_differences():
    torch.manual_seed(5)
    B, C, H, W, n = 2, 2, 9, 10, 6
    images = torch.rand(B, C, H, W, dtype=torch.float64)
    b0 = torch.tensor(GRAD_BOXES, dtype=torch.float64)
    eps = 1e-6
    numeric = torch.stack([
        (stn_zoom(images, b0 + eps * e.view(B, 3), n) - stn_zoom(images, b0 - eps * e.view(B, 3), n))
        / (2 * eps)
        for e in torch.eye(B * 3, dtype=torch.float64)
    ], dim=-1)  # (B, C, n, n, B*3)
    analytic = torch.autograd.functional.jacobian(lambda b: stn_zoom(images, b, n), b0)
    torch.testing.assert_close(analytic.flatten(-2), numeric, rtol=1e-6, atol=1e-8)
    assert numeric.abs().max() > 1e-2
    # sample b reads only box b
    assert analytic[0, ..., 1, :].abs().max() == 0 and analytic[1, ..., 0, :].abs().max() == 0


def test_box_gradient_on_a_linear_image_is_its_slope():
    """On I(x, y) = a x + c y (at pixel centres) bilinear sampling is exact inside the image, so
    out[v, u] = a x_u + c y_v - (a + c) / 2 and d out / d(tx, ty, tl) = (a, c, a s_u + c s_v)
    with s_u = (2u + 1 - n) / n."""
    a, c, H, W, n = 0.7, -1.3, 20, 24, 5
    x = torch.arange(W, dtype=torch.float64) + 0.5
    y = torch.arange(H, dtype=torch.float64) + 0.5
    images = (a * x[None, :] + c * y[:, None])[None, None]  # (1, 1, H, W)
    boxes = torch.tensor([[11.3, 9.6, 4.2]], dtype=torch.float64, requires_grad=True)
    out = stn_zoom(images, boxes, n)[0, 0]  # (n, n), out[v, u]
    s = (2 * torch.arange(n, dtype=torch.float64) + 1 - n) / n
    tx, ty, tl = boxes.detach()[0]
    torch.testing.assert_close(out, a * (tx + tl * s)[None, :] + c * (ty + tl * s)[:, None],
                               rtol=0, atol=1e-12)
    weight = torch.randn(n, n, dtype=torch.float64)
    (out * weight).sum().backward()
    expected = torch.stack([a * weight.sum(), c * weight.sum(),
                            (weight * (a * s[None, :] + c * s[:, None])).sum()])
    torch.testing.assert_close(boxes.grad[0], expected, rtol=1e-10, atol=1e-12)


def test_dtype_batch_independence_and_no_host_sync():
    torch.manual_seed(9)
    images = torch.rand(3, 2, 10, 12)
    boxes = torch.tensor([[4.2, 5.7, 3.1], [6.0, 2.4, 1.9], [9.5, 8.5, 4.0]], dtype=torch.float64)
    out = stn_zoom(images, boxes, 7)
    assert out.dtype == torch.float32  # boxes cast to the images' dtype
    for b in range(3):
        torch.testing.assert_close(stn_zoom(images[b : b + 1], boxes[b : b + 1], 7), out[b : b + 1])
    # meta tensors have no values: any .item() or data-dependent `if` would raise
    meta = stn_zoom(torch.empty(2, 3, 16, 12, device="meta"), torch.empty(2, 3, device="meta"), 5)
    assert meta.shape == (2, 3, 5, 5)


def test_outside_is_zero():
    assert stn_zoom(torch.ones(1, 3, 8, 8), torch.tensor([[-20.0, 4.0, 3.0]]), 5).abs().max() == 0


@pytest.mark.parametrize("images,boxes,out_size,match", [
    (torch.rand(3, 8, 8), torch.rand(3, 3), 4, "Tensor\\[B, C, H, W\\]"),
    (torch.ones(2, 1, 8, 8, dtype=torch.uint8), torch.rand(2, 3), 4, "floating-point"),
    (torch.rand(2, 1, 8, 8), torch.rand(3, 3), 4, "B=2"),
    (torch.rand(2, 1, 8, 8), torch.rand(2, 4), 4, "Tensor\\[B, 3\\]"),
    (torch.rand(2, 1, 8, 8), torch.rand(2, 3), 0, "out_size"),
])
def test_invalid_arguments(images, boxes, out_size, match):
    with pytest.raises(ValueError, match=match):
        stn_zoom(images, boxes, out_size)


# ----------------------------------------------------------------------------- RA-CNN


def small_racnn(**kw):
    return RACNN(5, backbone="small_vgg_bn", num_scales=2, input_sizes=[48, 40], apn_hidden=16,
                 apn_pool=2, **kw)


def test_racnn_stn_cropper_forward_backward():
    torch.manual_seed(0)
    net = small_racnn(cropper="stn")
    x = torch.rand(2, 3, 48, 48)
    out = net(x)
    assert out.inputs[1].shape == (2, 3, 40, 40) and out.fused_logits.shape == (2, 5)
    torch.testing.assert_close(out.inputs[1], stn_zoom(x, out.boxes[0], 40))
    # the finer scale's loss reaches the APN through the sampling grid (there is no mask)
    F.cross_entropy(out.logits[1], torch.tensor([0, 1])).backward()
    apn_grads = [p.grad for p in net.apns[0].parameters()]
    assert all(g is not None for g in apn_grads) and max(g.abs().max() for g in apn_grads) > 0
    net.zero_grad()
    out = net(x, detach_boxes=True)  # classification phase: no gradient to the APN
    F.cross_entropy(out.logits[1], torch.tensor([0, 1])).backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in net.apns[0].parameters())


def test_racnn_stn_cropper_cuts_scale2_from_full_resolution_images():
    torch.manual_seed(0)
    net = small_racnn(cropper="stn").eval()
    images = torch.rand(2, 3, 96, 96)  # twice scale 1's input side
    out = net(images)
    assert out.view_scale == 2.0
    torch.testing.assert_close(out.inputs[1], stn_zoom(images, out.boxes[0] * 2.0, 40))


def test_racnn_croppers_share_the_box_and_differ_in_the_crop():
    torch.manual_seed(0)
    nets = {c: small_racnn(cropper=c) for c in ("boxcar", "stn")}
    nets["stn"].load_state_dict(nets["boxcar"].state_dict())  # the cropper has no parameters
    x = torch.rand(2, 3, 48, 48)
    out = {c: net.eval()(x) for c, net in nets.items()}
    torch.testing.assert_close(out["stn"].boxes[0], out["boxcar"].boxes[0])
    torch.testing.assert_close(out["boxcar"].inputs[1], zoom(x, out["boxcar"].boxes[0], 40, k=10.0))
    assert (out["stn"].inputs[1] - out["boxcar"].inputs[1]).abs().max() > 1e-2
    with pytest.raises(ValueError, match="cropper must be one of"):
        small_racnn(cropper="affine")


def test_cli_override_selects_the_stn_cropper(tmp_path):
    from raccn.cli import main

    args = ["--config", os.path.join(ROOT, "configs", "racnn_quickstart.yaml"), "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path)]
    assert main(args, run=False).model.net.cropper == "boxcar"  # the default: the paper's
    cli = main([*args, "--model.init_args.net.init_args.cropper", "stn"], run=False)
    assert cli.model.net.cropper == "stn" and cli.model.hparams.net["init_args"]["cropper"] == "stn"
