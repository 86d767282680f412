"""DRAM (Ba et al. 2015): shapes, config checks, which loss reaches which parameters, the
sequence loss against hand-computed values, batched Monte Carlo prediction, and a tiny fit in
which a two-label sequence has to be read from two places of the image."""

import math

import pytest
import torch
import torch.nn.functional as F

from raccn.losses import dram_loss
from raccn.losses.dram_loss import sequence_mask
from raccn.models import DRAM, DRAMOutput
from raccn.models.context_network import ContextNetwork
from raccn.models.dram_glimpse_network import DRAMGlimpseNetwork
from raccn.ops import glimpse


def small_model(**kw):
    args = {"num_classes": 4, "max_digits": 3, "glimpses_per_digit": 2, "patch_size": 6, "scales": 2,
            "conv_channels": (4, 4, 8), "glimpse_dim": 32, "hidden_size": 32, "context_size": 8,
            "context_channels": (4, 8, 8), "std": 0.2}
    args.update(kw)
    return DRAM(**args)


@pytest.mark.parametrize("B", [1, 4])
def test_output_shapes(B):
    torch.manual_seed(0)
    m = small_model()
    out = m(torch.rand(B, 1, 20, 28))  # not square
    assert m.eos_index == 4 and m.glimpses == 6
    assert isinstance(out, DRAMOutput)
    assert out.logits.shape == (B, 3, 5)  # S = 3 slots, K = 4 classes + EOS
    assert out.locations.shape == (B, 6, 2)  # T = S * N = 6
    assert out.log_pi.shape == (B, 6) and out.baselines.shape == (B, 6)
    assert not out.locations.requires_grad  # actions are detached


def test_locations_stay_in_the_image_square():
    torch.manual_seed(0)
    out = small_model(std=2.0)(torch.rand(16, 1, 16, 16))  # wide policy: samples leave [-1, 1]
    assert out.locations.abs().max() <= 1.0
    assert (out.locations.abs() == 1.0).any()  # clamped, not squashed


def test_rgb_input_and_non_square_context():
    out = small_model(in_channels=3, context_size=(4, 10))(torch.rand(2, 3, 12, 30))
    assert out.logits.shape == (2, 3, 5)


def test_deterministic_forward_is_reproducible_and_batch_independent():
    torch.manual_seed(0)
    m = small_model()
    x = torch.rand(3, 1, 16, 20)
    a, b = m(x, deterministic=True), m(x, deterministic=True)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)
    one = m(x[1:2], deterministic=True)  # B = 1 gives the same rollout as row 1 of B = 3
    torch.testing.assert_close(one.logits, a.logits[1:2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one.locations, a.locations[1:2], rtol=1e-5, atol=1e-6)
    c = m(x)  # sampled rollouts differ from the mean path
    assert not torch.equal(c.locations, a.locations)


def test_image_mean_is_subtracted_before_anything_reads_the_image():
    torch.manual_seed(0)
    m = small_model(in_channels=3, subtract_image_mean=True)
    x = torch.rand(2, 3, 16, 20)
    out = m(x, deterministic=True)
    shifted = m(x + torch.tensor([0.3, -0.2])[:, None, None, None], deterministic=True)
    for u, v in zip(out, shifted):  # a brighter or darker copy is read identically
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)
    m.subtract_image_mean = False  # the same weights on the centred images by hand
    by_hand = m(x - x.mean(dim=(1, 2, 3), keepdim=True), deterministic=True)
    torch.testing.assert_close(by_hand.logits, out.logits)
    plain, brighter = m(x, deterministic=True), m(x + 0.3, deterministic=True)  # without it,
    assert not torch.allclose(plain.locations, brighter.locations, atol=1e-4)  # brightness counts


def test_first_location_comes_from_the_context_network():
    torch.manual_seed(0)
    m = small_model()
    x = torch.zeros(2, 1, 16, 16)
    x[1, :, :8] = 1.0  # a different whole image
    first = m(x, deterministic=True).locations[:, 0]
    assert not torch.allclose(first[0], first[1])
    with torch.no_grad():  # it is the emission network applied to c_I
        torch.testing.assert_close(first, torch.tanh(m.locator.fc(m.context_net(x))))


def test_glimpse_network_is_the_product_of_what_and_where():
    torch.manual_seed(0)
    net = DRAMGlimpseNetwork(in_channels=2, patch_size=5, scales=3, channels=(3, 4), out_dim=16)
    x, loc = torch.rand(4, 2, 17, 23), torch.rand(4, 2) * 2 - 1
    g = net(x, loc)
    rho = glimpse(x, loc, 5, 3, 2.0).flatten(1, 2)  # (B, J*C, P, P)
    what = F.relu(net.fc_image(net.convs(rho).flatten(1)))
    where = F.relu(net.fc_loc(loc))
    torch.testing.assert_close(g, what * where)
    assert g.shape == (4, 16)


@pytest.mark.parametrize("H,W", [(54, 54), (5, 40)])  # larger and smaller than context_size
def test_context_network_shapes(H, W):
    net = ContextNetwork(in_channels=1, out_dim=12, context_size=(8, 16), channels=(4, 4, 4))
    c = net(torch.rand(2, 1, H, W))
    assert c.shape == (2, 12) and c.abs().max() < 1.0


@pytest.mark.parametrize("kwargs,match", [
    ({"num_classes": 0}, "num_classes must be an integer >= 1"),
    ({"max_digits": 0}, "max_digits must be an integer >= 1"),
    ({"glimpses_per_digit": 0}, "glimpses_per_digit must be an integer >= 1"),
    ({"glimpses_per_digit": 1.5}, "glimpses_per_digit must be an integer >= 1"),
    ({"hidden_size": 0}, "hidden_size must be an integer >= 1"),
    ({"glimpse_dim": 0}, "glimpse_dim must be an integer >= 1"),
    ({"in_channels": 0}, "in_channels must be an integer >= 1"),
    ({"patch_size": 0}, "size must be a positive integer"),
    ({"scales": 0}, "scales must be an integer >= 1"),
    ({"scale_factor": 0.5}, "scale_factor must be >= 1"),
    ({"std": 0.0}, "std must be > 0"),
    ({"conv_channels": ()}, "conv_channels must be a non-empty list"),
    ({"context_channels": (8, 0)}, "context_channels must be a non-empty list"),
    ({"context_size": 0}, "context_size must be a positive integer"),
    ({"context_size": (4, 4, 4)}, "context_size must be a positive integer or a pair"),
    ({"context_size": 2.5}, "context_size must be a positive integer or a pair"),
])
def test_invalid_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_model(**kwargs)


def test_invalid_inputs():
    m = small_model()
    with pytest.raises(ValueError, match="in_channels = 1"):
        m(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="mc must be an integer >= 1"):
        m.predict_proba(torch.rand(2, 1, 16, 16), mc=0)
    out = m(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="targets must be Tensor"):
        dram_loss(out, torch.zeros(2, 2, dtype=torch.long))


def test_predict_proba_is_one_batched_forward():
    torch.manual_seed(0)
    m = small_model()
    x = torch.rand(3, 1, 16, 16)
    batches = []
    m.register_forward_hook(lambda mod, args, out: batches.append(args[0].shape[0]))
    torch.manual_seed(1)
    probs = m.predict_proba(x, mc=5)
    assert batches == [15]  # one forward over the 5 rollouts of 3 images
    assert probs.shape == (3, 3, 5) and not probs.requires_grad
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 3))
    torch.manual_seed(1)
    with torch.no_grad():
        logits = m(torch.cat([x] * 5)).logits  # rollout-major
    manual = sum(logits[3 * r: 3 * r + 3].softmax(-1) for r in range(5)) / 5
    torch.testing.assert_close(probs, manual)
    torch.manual_seed(1)
    single = m.predict_proba(x)  # mc = 1: one sampled rollout
    assert single.shape == (3, 3, 5)


def test_sequence_mask_counts_up_to_the_first_eos():
    targets = torch.tensor([[1, 2, 0, 2], [2, 2, 2, 2], [0, 1, 3, 1], [3, 2, 1, 2]])
    expected = [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    assert sequence_mask(targets, eos=2).long().tolist() == expected


def test_dram_loss_hand_computed():
    # num_classes 2, EOS = 2, S = 3, T = 2
    logits = torch.tensor([
        [[0.0, 2.0, 0.0], [1.0, 0.0, 3.0], [0.0, 5.0, 0.0]],  # predicts 1, EOS, (1)
        [[2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 9.0]],  # predicts 0, 0, (EOS)
    ])
    targets = torch.tensor([[1, 2, 0], [0, 2, 2]])  # slot 3 is after the first EOS in both
    log_pi = torch.tensor([[-1.0, -2.0], [-0.5, -0.5]])
    baselines = torch.tensor([[0.5, 0.25], [0.5, 0.0]])
    out = DRAMOutput(logits, torch.zeros(2, 2, 2), log_pi, baselines)
    parts = dram_loss(out, targets, reinforce_weight=2.0)

    def nll(row, y):
        return math.log(sum(math.exp(v) for v in row)) - row[y]

    ce0 = nll([0, 2, 0], 1) + nll([1, 0, 3], 2)  # first sequence right: R = 1
    ce1 = nll([2, 0, 0], 0) + nll([1, 0, 0], 2)  # misses the EOS: R = 0
    ce = (ce0 + ce1) / 2
    # advantages: [[0.5, 0.75], [-0.5, 0]];  -sum(log_pi * adv) per sequence: [2.0, -0.25]
    reinforce = (2.0 - 0.25) / 2
    mse = ((0.5**2 + 0.75**2) + (0.5**2 + 0.0)) / 4
    assert parts.reward.tolist() == [1.0, 0.0]
    assert parts.ce.item() == pytest.approx(ce, rel=1e-6)
    assert parts.reinforce.item() == pytest.approx(reinforce, rel=1e-6)
    assert parts.baseline.item() == pytest.approx(mse, rel=1e-6)
    assert parts.loss.item() == pytest.approx(ce + 2 * reinforce + mse, rel=1e-6)

    # whatever follows the first EOS is ignored, even an invalid label
    ignored = dram_loss(out, torch.tensor([[1, 2, -100], [0, 2, 7]]), reinforce_weight=2.0)
    for u, v in zip(parts, ignored):
        torch.testing.assert_close(u, v)
    # a full-length sequence has no EOS: every slot counts
    full = dram_loss(out, torch.tensor([[1, 0, 1], [0, 0, 2]]))
    assert full.reward.tolist() == [0.0, 1.0]
    assert full.ce.item() == pytest.approx(
        (nll([0, 2, 0], 1) + nll([1, 0, 3], 0) + nll([0, 5, 0], 1)
         + nll([2, 0, 0], 0) + nll([1, 0, 0], 0) + nll([0, 0, 9], 2)) / 2, rel=1e-6)


GROUPS = ("context_net", "glimpse_net", "core", "location_core", "locator", "baseline", "classifier")


def reached(model, loss):
    """Parameter groups (first name component) where ``loss`` gives a non-zero gradient."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    hit = {n: p.grad is not None and p.grad.abs().sum().item() > 0 for n, p in model.named_parameters()}
    return hit, {n.split(".")[0] for n, h in hit.items() if h}


def test_gradient_routing():
    torch.manual_seed(3)
    m = small_model()
    x = torch.rand(8, 1, 16, 16)
    y = torch.tensor([[0, 1, 4], [2, 4, 4], [3, 3, 3], [1, 4, 0]] * 2)

    def parts():
        return dram_loss(m(x), y)

    full, groups = reached(m, parts().loss)
    assert groups == set(GROUPS)
    assert all(full.values()), f"hybrid loss misses {[n for n, h in full.items() if not h]}"
    ce, groups = reached(m, parts().ce)
    assert groups == {"glimpse_net", "core", "classifier"}
    assert all(h for n, h in ce.items() if n.split(".")[0] in groups)
    assert reached(m, parts().baseline)[1] == {"baseline"}
    rl, groups = reached(m, parts().reinforce)
    assert groups == {"locator", "location_core", "context_net"}  # not the classification path
    assert all(h for n, h in rl.items() if n.split(".")[0] in groups)


def test_policy_gradient_reaches_the_classification_core_only_when_asked():
    torch.manual_seed(3)
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 5, (8, 3))
    m = small_model(policy_grad_to_core=True)
    assert reached(m, dram_loss(m(x), y).reinforce)[1] == {
        "locator", "location_core", "context_net", "core", "glimpse_net"}


# --- a tiny fit --------------------------------------------------------------------------------

PATTERNS = torch.zeros(4, 4, 4)
PATTERNS[0, :2], PATTERNS[1, 2:], PATTERNS[2, :, :2], PATTERNS[3, :, 2:] = 1, 1, 1, 1


def two_digit_task(n: int, seed: int):
    """8x20 noisy canvases holding one or two 4x4 "digits" (4 classes: top, bottom, left or
    right half lit), the first at columns 2-5, the second at columns 10-13. Targets (Tensor[n, 3])
    are the labels then EOS = 4."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n, 2), generator=g)
    two = torch.randint(0, 2, (n,), generator=g).bool()
    y[:, 1] = torch.where(two, y[:, 1], 4)
    targets = torch.cat([y, torch.full((n, 1), 4)], dim=1)
    x = torch.rand(n, 1, 8, 20, generator=g) * 0.2
    x[:, 0, 2:6, 2:6] = torch.maximum(x[:, 0, 2:6, 2:6], PATTERNS[y[:, 0]])
    second = PATTERNS[y[:, 1].clamp(max=3)] * two[:, None, None]
    x[:, 0, 2:6, 10:14] = torch.maximum(x[:, 0, 2:6, 10:14], second)
    return x, targets


def test_dram_learns_to_read_a_two_digit_sequence_left_to_right():
    """One 6x6 glimpse per label: a glimpse sees at most one digit, and the first must be sent
    to the left digit, the second to the right one, then the sequence must end with EOS. The
    context network sees the mean brightness only (context_size=1), so it cannot pass the
    classes on through the first location (l_n is an input of the glimpse network). Whole
    sequence right, measured for seeds 0-7 after 600 steps: 0.71-0.97 (seed 0, used here:
    0.96); chance about 5 %; a policy stuck at the centre: 0.26. ~9 s on one thread."""
    torch.manual_seed(0)
    m = DRAM(num_classes=4, max_digits=3, glimpses_per_digit=1, patch_size=6, scales=1,
             conv_channels=(8, 8, 16), glimpse_dim=64, hidden_size=64, context_size=1,
             context_channels=(8, 8, 8), std=0.2)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for step in range(600):
        x, y = two_digit_task(64, 100 + step)
        loss = dram_loss(m(x), y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    x, y = two_digit_task(500, 1)
    pred = m.predict_proba(x).argmax(dim=-1)
    right = ((pred == y) | ~sequence_mask(y, 4)).all(dim=1)
    two = y[:, 1] != 4
    assert right.float().mean() > 0.6
    assert right[two].float().mean() > 0.5 and right[~two].float().mean() > 0.5  # both lengths
    with torch.no_grad():
        x_1, x_2 = m(x, deterministic=True).locations[:, :2, 0].mean(dim=0).tolist()
    # digit centres: column 4 -> x = -0.6, column 12 -> x = 0.2; seeds 0-7: x_1 in
    # [-0.94, -0.55], x_2 in [0.17, 0.23]
    assert x_1 < -0.4 and abs(x_2 - 0.2) < 0.15
