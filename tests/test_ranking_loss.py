"""raccn.losses.ranking_loss against hand-computed values; gradient direction; input checks."""

import pytest
import torch

from raccn.losses import ranking_loss

# Rows are class probabilities; logits = log(probabilities), so softmax gives them back exactly.
TARGET = torch.tensor([0, 2, 1])
PROBS = [
    [[0.50, 0.30, 0.20], [0.10, 0.60, 0.30], [0.20, 0.70, 0.10]],  # coarse: p_t = .50, .30, .70
    [[0.52, 0.18, 0.30], [0.20, 0.20, 0.60], [0.30, 0.40, 0.30]],  # middle: p_t = .52, .60, .40
    [[0.45, 0.45, 0.10], [0.10, 0.10, 0.80], [0.31, 0.38, 0.31]],  # fine:   p_t = .45, .80, .38
]


def scale_logits(scales, dtype=torch.float64):
    return [torch.tensor(PROBS[s], dtype=dtype).log() for s in scales]


@pytest.mark.parametrize("scales,margin,expected", [
    # sample 0: .50 -> .52, better but within the margin: .50 - .52 + .05 = .03
    # sample 1: .30 -> .60, above the margin: 0;  sample 2: .70 -> .40: .35
    ((0, 1), 0.05, (0.03 + 0.0 + 0.35) / 3),
    ((0, 1), 0.0, (0.0 + 0.0 + 0.30) / 3),
    ((0, 1), 0.25, (0.23 + 0.0 + 0.55) / 3),
    # second pair: .52 -> .45: .12;  .60 -> .80: 0;  .40 -> .38: .07 (summed over pairs)
    ((0, 1, 2), 0.05, (0.03 + 0.12 + 0.0 + 0.0 + 0.35 + 0.07) / 3),
])
def test_hand_computed_values(scales, margin, expected):
    loss = ranking_loss(scale_logits(scales), TARGET, margin=margin)
    assert loss.shape == ()
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)


def test_uses_probabilities_not_logits():
    """Adding a per-row constant to the logits leaves softmax, hence the loss, unchanged."""
    logits = scale_logits((0, 1, 2))
    shifted = [l + torch.tensor([[3.0], [-2.0], [7.5]], dtype=torch.float64) * (s + 1)
               for s, l in enumerate(logits)]
    torch.testing.assert_close(ranking_loss(shifted, TARGET), ranking_loss(logits, TARGET))


def test_default_margin_is_paper_value_and_dtypes():
    logits = scale_logits((0, 1), dtype=torch.float32)
    loss = ranking_loss(logits, TARGET.int())  # int32 targets accepted
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, torch.tensor(0.38 / 3))


def test_batch_of_one():
    logits = [l[2:3] for l in scale_logits((0, 1))]
    expected = torch.tensor(0.35, dtype=torch.float64)
    torch.testing.assert_close(ranking_loss(logits, TARGET[2:3]), expected)


def test_gradient_raises_fine_and_lowers_coarse_true_class():
    coarse, fine = (l.requires_grad_() for l in scale_logits((0, 1)))
    loss = ranking_loss([coarse, fine], TARGET)
    loss.backward()
    rows = torch.arange(3)
    # active hinges (samples 0 and 2): descending the loss raises the fine true-class logit
    assert torch.all(fine.grad[rows, TARGET][[0, 2]] < 0)
    assert torch.all(coarse.grad[rows, TARGET][[0, 2]] > 0)
    # inactive hinge (sample 1, fine scale already ahead by more than the margin): no gradient
    assert fine.grad[1].abs().max() == 0 and coarse.grad[1].abs().max() == 0
    # and the step itself: a larger fine-scale true-class logit gives a smaller loss
    bumped = fine.detach().clone()
    bumped[rows, TARGET] += 0.1
    assert ranking_loss([coarse.detach(), bumped], TARGET) < loss.detach()


@pytest.mark.parametrize("logits,target,margin,match", [
    (scale_logits((0,)), TARGET, 0.05, ">= 2 scales"),
    (torch.stack(scale_logits((0, 1))), TARGET, 0.05, "list of Tensor\\[B, K\\]"),
    (scale_logits((0, 1)), TARGET, -0.01, "margin must be >= 0"),
    (scale_logits((0, 1)), TARGET, float("nan"), "margin must be >= 0 and finite"),
    (scale_logits((0, 1)), TARGET, float("inf"), "margin must be >= 0 and finite"),
    ([torch.zeros(3, 3), torch.zeros(3, 4)], TARGET, 0.05, "same shape"),
    ([torch.zeros(3), torch.zeros(3)], TARGET, 0.05, "Tensor\\[B, K\\]"),
    (scale_logits((0, 1)), TARGET[:2], 0.05, "target"),
    (scale_logits((0, 1)), TARGET.double(), 0.05, "integer"),
])
def test_invalid_inputs(logits, target, margin, match):
    with pytest.raises(ValueError, match=match):
        ranking_loss(logits, target, margin=margin)
