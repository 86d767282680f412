"""RA-CNN's phase schedule on its own: every transition, zero-length phases, epoch units; AG-CNN's
stage schedule likewise."""

import pytest

from raccn.lit.phase_schedule import Phase, PhaseSchedule, StageSchedule


def names(schedule: PhaseSchedule, steps: int) -> list[str]:
    return [schedule.at(t).name for t in range(steps)]


def test_every_transition_in_steps():
    s = PhaseSchedule(cls_length=3, rank_length=2, warmup_steps=2, pretrain_steps=2, reanchor_steps=1)
    assert names(s, 18) == (["warmup"] * 2 + ["pretrain"] * 2
                            + (["cls"] * 3 + ["reanchor"] + ["rank"] * 2) * 2 + ["cls"] * 2)
    # the position within the phase
    assert [s.at(t) for t in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10)] == [
        Phase("warmup", 0), Phase("warmup", 1), Phase("pretrain", 0), Phase("pretrain", 1),
        Phase("cls", 0), Phase("cls", 2), Phase("reanchor", 0), Phase("rank", 0), Phase("rank", 1),
        Phase("cls", 0)]
    assert s.at(10_000) == s.at(10_000 - 6)  # periodic after the pre-training


@pytest.mark.parametrize("kwargs,expected", [
    ({}, ["cls", "cls", "rank", "cls", "cls", "rank"]),  # the paper: alternation only
    ({"pretrain_steps": 1}, ["pretrain", "cls", "cls", "rank", "cls", "cls"]),
    ({"warmup_steps": 2}, ["warmup", "warmup", "cls", "cls", "rank", "cls"]),
    ({"reanchor_steps": 1}, ["cls", "cls", "reanchor", "rank", "cls", "cls"]),
])
def test_phases_of_length_zero_never_occur(kwargs, expected):
    assert names(PhaseSchedule(cls_length=2, rank_length=1, **kwargs), 6) == expected


def test_epoch_units_end_phases_at_epoch_ends():
    """4 steps per epoch; the pre-training ends in epoch 0, which counts as the first of the
    classification phase's 2 epochs; each ranking epoch starts with its re-anchoring step."""
    s = PhaseSchedule(cls_length=2, rank_length=1, unit="epochs", warmup_steps=1, pretrain_steps=2,
                      reanchor_steps=1, steps_per_epoch=4)
    by_epoch = [names(s, 28)[e * 4:(e + 1) * 4] for e in range(7)]
    assert by_epoch == [
        ["warmup", "pretrain", "pretrain", "cls"],
        ["cls"] * 4,
        ["reanchor", "rank", "rank", "rank"],
        ["cls"] * 4,
        ["cls"] * 4,
        ["reanchor", "rank", "rank", "rank"],
        ["cls"] * 4,
    ]
    assert s.at(3) == Phase("cls", 0) and s.at(7) == Phase("cls", 4)
    assert s.at(9) == Phase("rank", 0) and s.at(19) == Phase("cls", 7)


def test_epoch_units_when_the_pretraining_fills_whole_epochs():
    """Pre-training of exactly one epoch: the classification phase gets 2 whole epochs after it."""
    s = PhaseSchedule(cls_length=2, rank_length=1, unit="epochs", pretrain_steps=3, steps_per_epoch=3)
    assert names(s, 15) == ["pretrain"] * 3 + ["cls"] * 6 + ["rank"] * 3 + ["cls"] * 3
    no_prefix = PhaseSchedule(cls_length=1, rank_length=2, unit="epochs", steps_per_epoch=2)
    assert names(no_prefix, 8) == ["cls", "cls", "rank", "rank", "rank", "rank", "cls", "cls"]


@pytest.mark.parametrize("steps_per_epoch", [None, float("inf"), 0])
def test_epoch_units_without_an_epoch_length_say_what_to_do(steps_per_epoch):
    s = PhaseSchedule(cls_length=1, rank_length=1, unit="epochs", pretrain_steps=2,
                      steps_per_epoch=steps_per_epoch)
    assert [s.at(t) for t in range(3)] == [Phase("pretrain", 0), Phase("pretrain", 1), Phase("cls", 0)]
    with pytest.raises(ValueError, match="steps per epoch.*use phase_unit 'steps'"):
        s.at(3)


@pytest.mark.parametrize("kwargs,match", [
    ({"unit": "hours"}, "phase_unit must be 'steps' or 'epochs'"),
    ({"cls_length": 0}, "cls_length and rank_length must be >= 1"),
    ({"rank_length": 0}, "cls_length and rank_length must be >= 1"),
    ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
    ({"pretrain_steps": -1}, "pretrain_steps must be >= 0"),
    ({"reanchor_steps": -1}, "reanchor_steps must be >= 0"),
])
def test_invalid_lengths(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PhaseSchedule(**{"cls_length": 1, "rank_length": 1, **kwargs})


# -- StageSchedule (AG-CNN's stages, once each) ------------------------------------------------
def test_stages_follow_each_other_once_and_the_last_lasts():
    s = StageSchedule(("global", "local", "fusion"), (2, 3))
    assert [s.at(t) for t in range(7)] == [
        Phase("global", 0), Phase("global", 1), Phase("local", 0), Phase("local", 1), Phase("local", 2),
        Phase("fusion", 0), Phase("fusion", 1)]
    assert s.at(1000) == Phase("fusion", 995)
    assert [s.start(k) for k in range(3)] == [0, 2, 5]
    assert [s.length(k, 12) for k in range(3)] == [2, 3, 7]


def test_stages_of_length_zero_never_occur_and_epochs_end_at_epoch_ends():
    names = lambda s, n: [s.at(t).name for t in range(n)]
    assert names(StageSchedule(("global", "local", "fusion"), (0, 2)), 4) == ["local", "local", "fusion", "fusion"]
    assert names(StageSchedule(("global", "local", "fusion"), (1, 0)), 3) == ["global", "fusion", "fusion"]
    s = StageSchedule(("global", "local", "fusion"), (1, 2), unit="epochs", steps_per_epoch=3)
    assert names(s, 12) == ["global"] * 3 + ["local"] * 6 + ["fusion"] * 3
    assert s.length(2, 15) == 6
    with pytest.raises(ValueError, match="steps per epoch"):
        StageSchedule(("a", "b"), (1,), unit="epochs").at(0)


@pytest.mark.parametrize("args,match", [
    ((("a", "b"), (1, 2)), "a length for every stage but the last"),
    ((("a", "b"), (-1,)), "the a stage's length must be an integer >= 0"),
    ((("a", "b"), (1,), "days"), "stage unit must be"),
])
def test_stage_schedule_refuses_bad_values(args, match):
    with pytest.raises(ValueError, match=match):
        StageSchedule(*args)
