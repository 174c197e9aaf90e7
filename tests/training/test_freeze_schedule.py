"""The freeze schedule on its own: unfreezing by epoch, on a validation plateau, never; its resume state."""

import io

import pytest
import torch

from timam.training.config import FreezeConfig
from timam.training.freeze import FreezeSchedule


def _trains(schedule: FreezeSchedule, part: str, epochs: int = 6) -> list[bool]:
    return [schedule.trains(part, epoch) for epoch in range(1, epochs + 1)]


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (0, [True] * 6),
        (2, [False, False, True, True, True, True]),
        (None, [False] * 6),
    ],
)
def test_a_fixed_epoch_unfreezes_after_it_and_none_never(after, expected):
    schedule = FreezeSchedule(FreezeConfig(image_backbone_epochs=after, text_model_epochs=after))
    assert _trains(schedule, "image") == expected and _trains(schedule, "text") == expected
    assert schedule.frozen_throughout == (("image", "text") if after is None else ())
    for epoch in range(1, 7):  # validation never moves: a fixed schedule does not care
        assert schedule.observe(epoch, 5.0) == []
    assert _trains(schedule, "image") == expected


def test_plateau_unfreezes_after_patience_epochs_without_improvement():
    schedule = FreezeSchedule(FreezeConfig(image_backbone_epochs="plateau", text_model_epochs=3, plateau_patience=2))
    assert schedule.plateau_parts == ["image"] and schedule.frozen_throughout == ()
    assert schedule.observe(1, 10.0) == []  # the first score always improves on nothing
    assert schedule.observe(2, 12.0) == []  # an improvement: nothing stale
    assert schedule.observe(3, 12.0) == []  # one stale epoch, patience 2
    assert not schedule.trains("image", 4)
    assert schedule.observe(4, 11.0) == ["image"]  # the second in a row: train from epoch 5
    assert _trains(schedule, "image") == [False, False, False, False, True, True]
    assert _trains(schedule, "text") == [False, False, False, True, True, True]  # unaffected
    assert schedule.observe(5, 11.0) == [] and schedule.observe(6, 11.0) == []  # scheduled once only
    assert schedule.unfreeze_after["image"] == 4


def test_an_improvement_resets_the_plateau_count():
    schedule = FreezeSchedule(FreezeConfig(text_model_epochs="plateau", plateau_patience=2))
    for epoch, score in enumerate([10.0, 9.0, 11.0, 11.0], start=1):
        assert schedule.observe(epoch, score) == []
    assert schedule.observe(5, 10.0) == ["text"]


def test_plateau_ignores_a_part_the_model_lacks_and_never_schedules_a_none_part():
    config = FreezeConfig(image_backbone_epochs=None, text_model_epochs="plateau", plateau_patience=1)
    schedule = FreezeSchedule(config, parts=["image"])  # FC-Embed: no transformer
    assert schedule.plateau_parts == [] and schedule.frozen_throughout == ("image",)
    assert [schedule.observe(epoch, 1.0) for epoch in range(1, 5)] == [[], [], [], []]
    assert _trains(schedule, "image") == [False] * 6


def test_resume_state_round_trips_mid_plateau_in_the_saved_format():
    config = FreezeConfig(image_backbone_epochs="plateau", text_model_epochs="plateau", plateau_patience=2)
    schedule = FreezeSchedule(config)
    schedule.observe(1, 7.0)
    schedule.observe(2, 6.0)  # one stale epoch so far
    state = schedule.to_state()
    assert state == {"unfreeze_after": {"image": None, "text": None}, "plateau": {"best": 7.0, "stale": 1}}
    buffer = io.BytesIO()  # the training state is saved with torch.save and read with weights_only
    torch.save(state, buffer)
    buffer.seek(0)
    resumed = FreezeSchedule(config)
    resumed.load_state(torch.load(buffer, weights_only=True))
    assert resumed.to_state() == state
    assert resumed.observe(3, 6.0) == schedule.observe(3, 6.0) == ["image", "text"]
    assert resumed.to_state() == schedule.to_state()
    assert _trains(resumed, "text") == [False, False, False, True, True, True]

    done = FreezeSchedule(config)
    done.load_state(resumed.to_state())
    assert done.unfreeze_after == {"image": 3, "text": 3} and done.stale == 0
