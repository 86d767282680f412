"""raccn.layers: each block we wrote against a naive reference (loops over positions, the
papers' softmax formulas written out), the timm-backed blocks against their papers' equations,
float64 gradcheck, and shape/dtype under CPU bf16 and fp16 autocast."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raccn.layers import (
    ATTENTION,
    PLACEMENT,
    AugmentedConv2d,
    ChannelAttention,
    CrissCrossAttention,
    DualAttention,
    LocalSelfAttention2d,
    PositionAttention,
    ResidualAttention,
    build_attention,
    cbam,
    non_local,
    squeeze_excitation,
)
from raccn.layers.aa_conv import relative_logits


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Nonzero residual scales (α, β, γ start at 0), random BN statistics and affine maps, eval
    mode: every path of the block then shows in its output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 0:  # alpha, beta, gamma
                p.copy_(0.5 + torch.rand((), generator=g))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return module.eval()


def conv1x1(conv: nn.Conv2d, x):
    """A 1×1 convolution written as a matrix product (the papers' W x)."""
    y = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    return y if conv.bias is None else y + conv.bias[:, None, None]


def bn_eval(bn: nn.BatchNorm2d, x):
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


# --------------------------------------------------------------- timm's blocks, papers' formulas

def test_se_is_the_papers_squeeze_and_excitation():
    torch.manual_seed(0)
    m = squeeze_excitation(32, reduction=16).eval()
    x = torch.randn(2, 32, 5, 4)
    z = x.mean((2, 3))  # (B, C) squeeze
    w1, w2 = m.fc1.weight[:, :, 0, 0], m.fc2.weight[:, :, 0, 0]
    assert w1.shape == (2, 32) and w2.shape == (32, 2)  # C/r = 2 (timm would round up to 8)
    s = torch.sigmoid(F.linear(torch.relu(F.linear(z, w1, m.fc1.bias)), w2, m.fc2.bias))
    torch.testing.assert_close(m(x), x * s[:, :, None, None])
    assert sum(p.numel() for p in squeeze_excitation(256).parameters()) == 2 * 256 * 16 + 16 + 256


def test_cbam_is_the_papers_channel_then_spatial_gate():
    torch.manual_seed(0)
    m = randomize(cbam(32, reduction=8))
    x = torch.randn(2, 32, 6, 5)
    w0, w1 = m.channel.fc1.weight[:, :, 0, 0], m.channel.fc2.weight[:, :, 0, 0]
    assert w0.shape == (4, 32) and m.channel.fc1.bias is None and m.channel.fc2.bias is None

    def mlp(v):
        return F.linear(torch.relu(F.linear(v, w0)), w1)

    mc = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))  # Eq. (2)
    f1 = mc[:, :, None, None] * x
    pooled = torch.cat([f1.mean(1, keepdim=True), f1.amax(1, keepdim=True)], dim=1)  # [avg; max]
    conv = m.spatial.conv.conv
    assert conv.weight.shape == (1, 2, 7, 7)
    ms = torch.sigmoid(bn_eval(m.spatial.conv.bn, F.conv2d(pooled, conv.weight, padding=3)))
    torch.testing.assert_close(m(x), ms * f1)  # Eq. (3), BN after the 7x7 conv as in their code


def test_non_local_is_the_papers_embedded_gaussian():
    torch.manual_seed(0)
    m = randomize(non_local(16))
    x = torch.randn(2, 16, 4, 3)
    assert m.t.out_channels == m.p.out_channels == m.g.out_channels == 8  # C / 2
    theta, phi, g = (conv1x1(c, x).flatten(2) for c in (m.t, m.p, m.g))  # (B, C/2, N)
    f = torch.exp(torch.einsum("bci,bcj->bij", theta, phi))  # exp(θ_iᵀ φ_j), no 1/sqrt(C)
    y = torch.einsum("bij,bcj->bci", f / f.sum(-1, keepdim=True), g).view(2, 8, 4, 3)
    torch.testing.assert_close(m(x), bn_eval(m.norm, conv1x1(m.z, y)) + x)


def test_non_local_starts_as_the_identity():
    x = torch.randn(2, 16, 4, 3)
    torch.testing.assert_close(non_local(16)(x), x)  # BN scale initialised to 0 (paper §4.1)


# ------------------------------------------------------------------------------------ DANet

def test_position_attention_is_the_written_out_softmax():
    torch.manual_seed(0)
    m = randomize(PositionAttention(16, reduction=4))
    a = torch.randn(2, 16, 3, 4)
    B_, C_, D_ = (conv1x1(c, a).flatten(2) for c in (m.conv_b, m.conv_c, m.conv_d))  # (B, ., N)
    N = 12
    out = torch.empty(2, 16, N, dtype=a.dtype)
    for b in range(2):
        for j in range(N):
            e = torch.stack([torch.exp(B_[b, :, i] @ C_[b, :, j]) for i in range(N)])
            s_j = e / e.sum()  # s_ji over i, Eq. (1)
            assert torch.allclose(m.attention(a)[b, j], s_j, atol=1e-6)
            out[b, :, j] = m.alpha * sum(s_j[i] * D_[b, :, i] for i in range(N)) + a.flatten(2)[b, :, j]
    torch.testing.assert_close(m(a), out.view(2, 16, 3, 4))


def test_channel_attention_is_the_written_out_softmax():
    torch.manual_seed(0)
    m = randomize(ChannelAttention(6))
    a = torch.randn(2, 6, 3, 2) * 0.5
    A = a.flatten(2)
    out = torch.empty_like(A)
    for b in range(2):
        for j in range(6):
            e = torch.stack([torch.exp(A[b, i] @ A[b, j]) for i in range(6)])
            x_j = e / e.sum()  # x_ji over i, Eq. (3) (not the released code's max - energy)
            out[b, j] = m.beta * sum(x_j[i] * A[b, i] for i in range(6)) + A[b, j]
    torch.testing.assert_close(m(a), out.view_as(a))


def test_dual_attention_averages_the_two_modules_and_starts_as_identity():
    torch.manual_seed(0)
    a = torch.randn(2, 16, 3, 4)
    m = DualAttention(16, reduction=4)
    torch.testing.assert_close(m(a), a)  # α = β = 0
    randomize(m)
    torch.testing.assert_close(m(a), 0.5 * (m.position(a) + m.channel(a)))
    assert not torch.allclose(m(a), a)


# ------------------------------------------------------------------------------------ CCNet

def dense_criss_cross(m: CrissCrossAttention, x):
    """Dense attention over all H W positions, masked to the query's row and column."""
    B, C, H, W = x.shape
    q, k, v = (conv1x1(c, x).flatten(2) for c in (m.query, m.key, m.value))  # (B, ., N)
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    cross = (ys[:, None] == ys[None, :]) | (xs[:, None] == xs[None, :])  # (N, N), H + W - 1 each
    logits = torch.einsum("bcu,bci->bui", q, k).masked_fill(~cross, float("-inf"))
    a = torch.softmax(logits, -1)
    return m.gamma * torch.einsum("bui,bci->bcu", a, v).view(B, C, H, W) + x, a


@pytest.mark.parametrize("R", [1, 2, 3])
def test_criss_cross_equals_dense_attention_masked_to_row_and_column(R):
    torch.manual_seed(0)
    m = randomize(CrissCrossAttention(16, reduction=4, recurrence=R))
    x = torch.randn(2, 16, 5, 4)
    ref = x
    for _ in range(R):  # R passes with shared weights
        ref, _ = dense_criss_cross(m, ref)
    torch.testing.assert_close(m(x), ref)


def test_criss_cross_weights_cover_row_and_column_once():
    torch.manual_seed(0)
    m = randomize(CrissCrossAttention(8, reduction=2))
    x = torch.randn(1, 8, 5, 4)
    a_col, a_row = m.attention(x)
    assert a_col.shape == (1, 5, 4, 5) and a_row.shape == (1, 5, 4, 4)
    torch.testing.assert_close(a_col.sum(-1) + a_row.sum(-1), torch.ones(1, 5, 4))
    assert torch.all(torch.diagonal(a_col[0], dim1=0, dim2=2) == 0)  # self only in the row
    _, dense = dense_criss_cross(m, x)
    assert ((dense[0] > 0).sum(-1) == 5 + 4 - 1).all()


# ----------------------------------------------------------------------------------- AA-Conv

def test_relative_logits_against_a_loop_over_positions():
    torch.manual_seed(0)
    H, W, d = 3, 4, 5
    q = torch.randn(2, H, W, d)
    rel_h, rel_w = torch.randn(2 * H - 1, d), torch.randn(2 * W - 1, d)
    out = relative_logits(q, rel_h, rel_w)
    for b in range(2):
        for iy in range(H):
            for ix in range(W):
                for jy in range(H):
                    for jx in range(W):
                        ref = q[b, iy, ix] @ (rel_w[jx - ix + W - 1] + rel_h[jy - iy + H - 1])
                        torch.testing.assert_close(out[b, iy * W + ix, jy * W + jx], ref)


def reference_aa_conv(m: AugmentedConv2d, x):
    """Eq. (3) per pair of positions and head, then softmax, values, W_O, concat with the conv."""
    B, _, H, W = x.shape
    Nh, dkh, dvh = m.heads, m.dk // m.heads, m.dv // m.heads
    qkv = conv1x1(m.qkv, x)
    q, k, v = qkv[:, :m.dk], qkv[:, m.dk:2 * m.dk], qkv[:, 2 * m.dk:]
    c = m.max_size - 1  # embedding index of offset 0
    o = torch.zeros(B, m.dv, H, W, dtype=x.dtype)
    for b in range(B):
        for h in range(Nh):
            qh, kh = q[b, h * dkh:(h + 1) * dkh], k[b, h * dkh:(h + 1) * dkh]
            vh = v[b, h * dvh:(h + 1) * dvh]
            for iy in range(H):
                for ix in range(W):
                    logits = torch.stack([
                        qh[:, iy, ix] @ (kh[:, jy, jx] + m.rel_w[c + jx - ix] + m.rel_h[c + jy - iy])
                        for jy in range(H) for jx in range(W)]) / math.sqrt(dkh)
                    a = torch.softmax(logits, 0).view(H, W)
                    o[b, h * dvh:(h + 1) * dvh, iy, ix] = (vh * a).sum((1, 2))
    return torch.cat([m.conv(x), conv1x1(m.proj, o)], dim=1)


@pytest.mark.parametrize("size", [(3, 4), (5, 2)])
def test_aa_conv_against_a_loop_over_positions(size):
    torch.manual_seed(0)
    m = AugmentedConv2d(8, 12, heads=2, value_ratio=0.34, key_ratio=0.5, max_size=6)
    assert (m.dk, m.dv, m.conv.out_channels) == (6, 4, 8)
    x = torch.randn(2, 8, *size)
    torch.testing.assert_close(m(x), reference_aa_conv(m, x))


def test_aa_conv_shapes_and_clear_errors():
    m = AugmentedConv2d(16, 32, stride=2, max_size=8)
    assert (m.dv, m.dk) == (8, 16)  # 0.2 * 32 and 0.4 * 32, multiples of 8 heads
    assert m(torch.randn(1, 16, 9, 7)).shape == (1, 32, 5, 4)  # ceil(H / 2) like the conv
    with pytest.raises(ValueError, match="max_size >= 17"):
        m(torch.randn(1, 16, 34, 8))
    with pytest.raises(ValueError, match="odd kernel_size"):
        AugmentedConv2d(16, kernel_size=2)
    with pytest.raises(ValueError, match="exceeds out_channels"):
        AugmentedConv2d(4, 4, heads=8)


# -------------------------------------------------------------------------------------- SASA

def reference_sasa(m: LocalSelfAttention2d, x):
    """Eq. (3) by a loop over pixels and their in-image k x k neighbours."""
    B, _, H, W = x.shape
    q, k, v = (conv1x1(c, x) for c in (m.query, m.key, m.value))
    C, Nh, half = q.shape[1], m.heads, m.kernel_size // 2
    d = C // Nh
    y = torch.zeros(B, C, H, W, dtype=x.dtype)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                nbrs = [(a, c) for a in range(i - half, i + half + 1)
                        for c in range(j - half, j + half + 1) if 0 <= a < H and 0 <= c < W]
                r = torch.stack([torch.cat([m.rel_row[a - i + half], m.rel_col[c - j + half]])
                                 for a, c in nbrs])  # (n, C): r_{a-i, b-j}
                for h in range(Nh):
                    s = slice(h * d, (h + 1) * d)
                    logits = torch.stack([q[b, s, i, j] @ (k[b, s, a, c] + r[n, s])
                                          for n, (a, c) in enumerate(nbrs)])
                    w = torch.softmax(logits, 0)
                    y[b, s, i, j] = sum(w[n] * v[b, s, a, c] for n, (a, c) in enumerate(nbrs))
    return y


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_sasa_against_a_loop_over_neighbourhoods(kernel_size):
    torch.manual_seed(0)
    m = LocalSelfAttention2d(6, 8, kernel_size=kernel_size, heads=2)
    with torch.no_grad():  # small logits: the softmax is not one-hot, every neighbour counts
        for p in m.parameters():
            p.mul_(0.3)
    x = torch.randn(2, 6, 4, 5)
    torch.testing.assert_close(m(x), reference_sasa(m, x))


def unfold_sasa(m: LocalSelfAttention2d, x):
    """Eq. (3) as the layer first computed it: neighbourhoods gathered with ``F.unfold``, logits
    ``(q * (keys + r)).sum`` over each head's channels. Returns ``(y, weights)``, the weights as
    :meth:`LocalSelfAttention2d.attention` gives them, ``[B, Nh, k*k, H W]``."""
    B, _, H, W = x.shape
    Nh, k, pad = m.heads, m.kernel_size, m.kernel_size // 2
    q = m.query(x).reshape(B, Nh, -1, 1, H * W)
    d = q.shape[2]
    keys = F.unfold(m.key(x), k, padding=pad).view(B, Nh, d, k * k, H * W)
    values = F.unfold(m.value(x), k, padding=pad).view(B, Nh, d, k * k, H * W)
    r = m.offsets().T.reshape(1, Nh, d, k * k, 1)
    logits = (q * (keys + r)).sum(2)
    inside = F.unfold(x.new_ones(1, 1, H, W), k, padding=pad).view(1, 1, k * k, H * W) > 0
    a = torch.softmax(logits.masked_fill(~inside, float("-inf")), dim=2)
    y = (a[:, :, None] * values).sum(3).reshape(B, -1, H, W)
    return (F.avg_pool2d(y, m.stride) if m.stride > 1 else y), a


@pytest.mark.parametrize("kernel_size, heads, stride, size", [
    (7, 3, 1, (5, 6)),  # window wider than the map; head 1 holds row and column channels
    (5, 4, 2, (9, 4)),
    (3, 1, 1, (4, 7)),
])
def test_sasa_equals_the_unfold_formulation_in_float64(kernel_size, heads, stride, size):
    """The shifted-view implementation computes the same weights, output and gradients (input,
    projections, both embeddings) as the ``F.unfold`` one, to float64 rounding."""
    torch.manual_seed(0)
    m = LocalSelfAttention2d(5, 12, kernel_size=kernel_size, stride=stride, heads=heads).double()
    with torch.no_grad():  # small logits: the softmax is not one-hot, every neighbour counts
        for p in m.parameters():
            p.mul_(0.5)
    x = torch.randn(3, 5, *size, dtype=torch.float64, requires_grad=True)
    y_ref, a_ref = unfold_sasa(m, x)
    a, y = m.attention(x), m(x)
    tight = {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(a, a_ref, **tight)
    assert (a_ref == 0).any() and a_ref.amax(2).max() < 0.9  # borders; no one-hot softmax
    torch.testing.assert_close(y, y_ref, **tight)
    w = torch.randn_like(y)
    inputs = [x, *m.parameters()]
    grads, grads_ref = (torch.autograd.grad((out * w).sum(), inputs) for out in (y, y_ref))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, **tight)
        assert g.abs().max() > 0


def test_sasa_weights_stay_inside_the_image_and_stride_pools():
    m = LocalSelfAttention2d(8, 8, kernel_size=3, heads=2)
    a = m.attention(torch.randn(1, 8, 4, 5))  # (1, Nh, 9, 20)
    torch.testing.assert_close(a.sum(2), torch.ones(1, 2, 20))
    assert torch.all(a[:, :, 0, 0] == 0)  # top-left pixel has no upper-left neighbour
    assert torch.all(a[:, :, 4] > 0)  # the centre (offset 0, 0) is always inside
    assert LocalSelfAttention2d(8, 16, stride=2)(torch.randn(1, 8, 6, 5)).shape == (1, 16, 3, 2)


# ------------------------------------------------------------------------ residual attention

def test_residual_attention_is_one_plus_mask_times_trunk():
    torch.manual_seed(0)
    m = randomize(ResidualAttention(8, p=1, t=2, r=1, depth=2))
    x = torch.randn(2, 8, 9, 7)
    u = m.pre(x)
    mask, trunk = m.mask(u), m.trunk(u)
    assert mask.shape == trunk.shape == x.shape  # mixed attention: per channel and position
    assert mask.min() > 0 and mask.max() < 1 and mask.std() > 0
    torch.testing.assert_close(m(x), m.post((1 + mask) * trunk))
    with torch.no_grad():
        m.mask[-2].weight.zero_()  # last 1x1 conv: M = sigmoid(0) = 1/2 everywhere
    torch.testing.assert_close(m(x), m.post(1.5 * trunk))


def test_residual_attention_without_pre_post_units():
    torch.manual_seed(0)
    m = randomize(ResidualAttention(8, p=0, t=1, depth=3))
    x = torch.randn(1, 8, 8, 8)
    torch.testing.assert_close(m(x), (1 + m.mask(x)) * m.trunk(x))


# ------------------------------------------------------------------------- all blocks by name

SMALL = {  # small settings for 8-channel tests
    "se": {"reduction": 4}, "cbam": {"reduction": 4}, "non_local": {}, "danet": {"reduction": 4},
    "ccnet": {"reduction": 4}, "aa_conv": {"heads": 2, "max_size": 8},
    "sasa": {"heads": 2, "kernel_size": 3}, "residual_attention": {"depth": 1},
}


def test_registry_names_and_placements():
    assert set(ATTENTION) == set(PLACEMENT) == set(SMALL)
    assert set(PLACEMENT.values()) <= {"residual", "stride16", "last", "stages", "conv3x3"}
    with pytest.raises(ValueError, match="choose one of"):
        build_attention("squeeze", 8)


@pytest.mark.parametrize("name", sorted(ATTENTION))
@pytest.mark.parametrize("B", [1, 3])
def test_block_keeps_the_shape(name, B):
    m = build_attention(name, 8, **SMALL[name])
    assert m(torch.randn(B, 8, 5, 3)).shape == (B, 8, 5, 3)


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_gradcheck_float64(name):
    torch.manual_seed(0)
    m = randomize(build_attention(name, 8, **SMALL[name])).double()
    x = torch.randn(2, 8, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_autocast_shape_dtype_and_values(name, dtype):
    torch.manual_seed(0)
    m = randomize(build_attention(name, 16, **SMALL[name]))
    x = torch.randn(2, 16, 6, 5)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=dtype):
            y = m(x)
    assert y.shape == x.shape and y.dtype in (dtype, torch.float32)
    assert torch.isfinite(y).all()
    assert (y.float() - ref).norm() / ref.norm() < 0.05  # bf16 keeps ~3 significant digits
