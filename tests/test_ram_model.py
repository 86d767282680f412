"""RAM modules: shapes, the hybrid loss, which loss reaches which parameters, config checks."""

import math

import pytest
import torch

from raccn.losses import ram_loss
from raccn.models import RecurrentAttentionModel


def small_model(**kw):
    args = {"num_classes": 5, "glimpses": 3, "patch_size": 4, "scales": 2, "glimpse_hidden": 16,
            "glimpse_dim": 32, "hidden_size": 32, "std": 0.2}
    args.update(kw)
    return RecurrentAttentionModel(**args)


@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_output_shapes(B, core):
    torch.manual_seed(0)
    out = small_model(core=core)(torch.rand(B, 1, 20, 24))
    assert out.logits.shape == (B, 3, 5)
    assert out.locations.shape == (B, 3, 2)
    assert out.log_pi.shape == (B, 2) and out.baselines.shape == (B, 2)
    assert out.locations.abs().max() <= 1.0
    assert not out.locations.requires_grad  # actions are detached


def test_single_glimpse_has_no_policy_terms():
    out = small_model(glimpses=1)(torch.rand(2, 1, 16, 16))
    assert out.log_pi.shape == (2, 0) and out.logits.shape == (2, 1, 5)
    loss = ram_loss(out.logits[:, -1], torch.tensor([0, 1]), out.log_pi, out.baselines)
    assert torch.isfinite(loss.loss) and loss.reinforce == 0 and loss.baseline == 0


def test_center_init_and_deterministic_path_repeat():
    m = small_model(init_loc="center")
    x = torch.rand(2, 1, 16, 16)
    a, b = m(x, deterministic=True), m(x, deterministic=True)
    assert torch.equal(a.locations[:, 0], torch.zeros(2, 2))
    torch.testing.assert_close(a.locations, b.locations)


def test_ram_loss_hand_computed():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # predictions 0, 1
    target = torch.tensor([0, 0])  # first right (R=1), second wrong (R=0)
    log_pi = torch.tensor([[-1.0, -2.0], [-0.5, -0.5]])
    baselines = torch.tensor([[0.5, 0.25], [0.5, 0.0]])
    parts = ram_loss(logits, target, log_pi, baselines, reinforce_weight=2.0)
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))) / 2
    # advantages: [[0.5, 0.75], [-0.5, 0]];  -sum(log_pi * adv) per sample: [2.0, -0.25]
    reinforce = (2.0 - 0.25) / 2
    mse = ((0.5**2 + 0.75**2) + (0.5**2 + 0.0)) / 4
    assert parts.reward.tolist() == [1.0, 0.0]
    assert parts.ce.item() == pytest.approx(ce, rel=1e-6)
    assert parts.reinforce.item() == pytest.approx(reinforce, rel=1e-6)
    assert parts.baseline.item() == pytest.approx(mse, rel=1e-6)
    assert parts.loss.item() == pytest.approx(ce + 2 * reinforce + mse, rel=1e-6)


def grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: (p.grad is not None and p.grad.abs().sum().item() > 0) for n, p in model.named_parameters()}


def test_gradient_routing():
    torch.manual_seed(3)
    m = small_model()
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 5, (8,))

    def parts():
        out = m(x)
        return ram_loss(out.logits[:, -1], y, out.log_pi, out.baselines)

    full = grads(m, parts().loss)
    for group in ("glimpse_net", "core", "classifier", "baseline", "locator"):
        names = [n for n in full if n.startswith(group)]
        assert names and all(full[n] for n in names), f"hybrid loss misses {group}: {full}"

    ce = grads(m, parts().ce)
    assert not any(ce[n] for n in ce if n.startswith(("locator", "baseline")))
    assert all(ce[n] for n in ce if n.startswith(("glimpse_net", "core", "classifier")))

    mse = grads(m, parts().baseline)
    assert {n for n, g in mse.items() if g} == {n for n in mse if n.startswith("baseline")}

    rl = grads(m, parts().reinforce)
    assert {n for n, g in rl.items() if g} == {n for n in rl if n.startswith("locator")}


def test_policy_gradient_reaches_the_core_only_when_asked():
    torch.manual_seed(3)
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 5, (8,))
    for to_core in (False, True):
        m = small_model(policy_grad_to_core=to_core)
        out = m(x)
        rl = grads(m, ram_loss(out.logits[:, -1], y, out.log_pi, out.baselines).reinforce)
        reached = {n.split(".")[0] for n, g in rl.items() if g}
        assert reached == ({"locator", "core", "glimpse_net"} if to_core else {"locator"})


@pytest.mark.parametrize("kwargs,match", [
    ({"std": 0.0}, "std must be > 0"),
    ({"std": -1.0}, "std must be > 0"),
    ({"glimpses": 0}, "glimpses must be an integer >= 1"),
    ({"patch_size": 0}, "size must be a positive integer"),
    ({"core": "gru"}, "core cell must be one of"),
    ({"init_loc": "corner"}, "init_loc must be one of"),
    ({"init": "xavier"}, "init must be one of"),
])
def test_invalid_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_model(**kwargs)


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_relu_init(core):
    """init="relu": Kaiming-normal (fan-in) glimpse layers and core input weights, orthogonal
    recurrent weights, zero biases; the heads keep PyTorch's default U(-1/sqrt(fan_in), ...)."""
    torch.manual_seed(0)
    m = RecurrentAttentionModel(core=core, init="relu")  # paper sizes: 64 -> 128 -> 256 -> 256
    for layer in m.glimpse_net.modules():
        if isinstance(layer, torch.nn.Linear):
            fan_in = layer.weight.shape[1]
            assert layer.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.15)
            assert not layer.bias.any()
    cell = m.core.cell
    assert cell.weight_ih.std().item() == pytest.approx(math.sqrt(2.0 / cell.weight_ih.shape[1]), rel=0.05)
    w = cell.weight_hh  # (gates * H, H): orthonormal columns
    assert torch.allclose(w.T @ w, torch.eye(w.shape[1]), atol=1e-4)
    assert not cell.bias_ih.any() and not cell.bias_hh.any()
    bound = 1.0 / math.sqrt(m.locator.fc.weight.shape[1])
    assert m.locator.fc.weight.abs().max() <= bound and m.locator.fc.bias.any()
    default = RecurrentAttentionModel(core=core)
    assert default.glimpse_net.fc_hg.bias.any()  # "torch" leaves PyTorch's init alone
    assert not torch.allclose(default.core.cell.weight_hh.T @ default.core.cell.weight_hh,
                              torch.eye(w.shape[1]), atol=1e-2)


@pytest.mark.parametrize("deterministic", [False, True])
def test_location_policy_matches_torch_normal(deterministic):
    """The written-out Gaussian: same samples from the same seed and the same log-density as
    torch.distributions.Normal, with the gradient of log pi w.r.t. the mean."""
    from torch.distributions import Normal

    from raccn.models.location_network import LocationNetwork

    torch.manual_seed(0)
    net = LocationNetwork(16, std=0.2)
    h = torch.randn(64, 16) * 3  # large means: many samples beyond [-1, 1] before the clamp
    torch.manual_seed(1)
    out = net(h, deterministic)
    mean = torch.tanh(net.fc(h))
    torch.manual_seed(1)
    raw = mean.detach() if deterministic else Normal(mean.detach(), 0.2).sample()
    torch.testing.assert_close(out.loc, raw.clamp(-1, 1))
    ref = Normal(mean, 0.2).log_prob(raw).sum(1)
    torch.testing.assert_close(out.log_pi, ref)
    g, g_ref = torch.autograd.grad(out.log_pi.sum(), net.fc.weight)[0], torch.autograd.grad(ref.sum(), net.fc.weight)[0]
    torch.testing.assert_close(g, g_ref)


def test_forward_is_the_papers_recurrence():
    """The forward against the paper's equations written out with the model's weights (ReLU RNN
    core from h_0 = 0, Gaussian policy on the detached state, baseline, action network at every
    step), drawing the locations from the same seed; log pi from torch.distributions.Normal."""
    import torch.nn.functional as F
    from torch.distributions import Normal

    from raccn.ops import glimpse

    torch.manual_seed(0)
    m = small_model(glimpses=4, std=0.3, init_loc="center")
    x = torch.rand(6, 1, 20, 20)
    torch.manual_seed(1)
    out = m(x)

    gn, cell, std = m.glimpse_net, m.core.cell, 0.3
    torch.manual_seed(1)
    loc, h = torch.zeros(6, 2), torch.zeros(6, cell.hidden_size)
    logits, locations, log_pi, baselines = [], [loc], [], []
    for t in range(4):
        rho = glimpse(x, loc, gn.patch_size, gn.scales, gn.scale_factor).flatten(1)
        g = F.relu(gn.fc_g(F.relu(gn.fc_hg(rho))) + gn.fc_l(F.relu(gn.fc_hl(loc))))
        h = F.relu(g @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh)
        logits.append(h @ m.classifier.fc.weight.T + m.classifier.fc.bias)
        if t < 3:
            mean = torch.tanh(m.locator.fc(h.detach()))
            raw = torch.normal(mean.detach(), std)
            log_pi.append(Normal(mean, std).log_prob(raw).sum(-1))
            baselines.append(m.baseline.fc(h.detach())[:, 0])
            loc = raw.clamp(-1, 1)
            locations.append(loc)
    stack = lambda v: torch.stack(v, dim=1)
    torch.testing.assert_close(out.locations, stack(locations))
    for ours, ref in zip((out.logits, out.log_pi, out.baselines), (stack(logits), stack(log_pi), stack(baselines))):
        torch.testing.assert_close(ours, ref)
    params = list(m.parameters())
    loss = lambda o: ram_loss(o[0][:, -1], torch.arange(6) % 5, o[1], o[2]).loss
    grads = torch.autograd.grad(loss((out.logits, out.log_pi, out.baselines)), params, allow_unused=True)
    grads_ref = torch.autograd.grad(loss((stack(logits), stack(log_pi), stack(baselines))), params, allow_unused=True)
    for (name, _), a, b in zip(m.named_parameters(), grads, grads_ref):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, msg=name)
