"""Per-model options: own defaults, refusal of options a model does not use, timesteps from the clip length."""

from __future__ import annotations

import logging

import pytest

from pipeline.models.convlstm import ConvLSTMOptions
from pipeline.models.registry import model_flags, model_options
from pipeline.verbs.train import resolve_timesteps


def test_each_model_has_its_own_defaults():
    assert model_options("mplstm", {}).dropout == 0.2
    assert model_options("convlstm", {}).dropout == 0.3
    mvm = model_options("mvm", {})  # the authors' LRW architecture
    assert (mvm.dropout, mvm.units, mvm.levels) == (0.0, 512, 4)
    assert (mvm.front, mvm.back, mvm.audio_front) == ("ir-resnet18", "mstcn", "ir")
    assert model_options("convlstm", {"filters": "8,8,8"}).filters == "8,8,8"
    assert model_options("late_fusion", {"combine": "features"}).combine == "features"
    assert {"units", "dropout", "filters", "front", "labelled_fraction"} <= {f.name for f in model_flags()}
    with pytest.raises(AttributeError):
        model_options("convlstm", {}).dropout = 0.1  # frozen


@pytest.mark.parametrize(
    "model, given, named",
    [
        ("convlstm", {"units": 64}, "--units"),
        ("convlstm", {"released": True}, "--released"),
        ("mvm", {"layers": "conv"}, "--layers"),
        ("mplstm", {"slots": 10}, "--slots"),
        ("single", {"augment": "lrw"}, "--augment"),
        ("mvm", {"pretrain": "composite"}, "--pretrain"),
    ],
)
def test_an_option_the_model_does_not_use_is_refused(model, given, named):
    with pytest.raises(ValueError, match=f"does not use {named}") as error:
        model_options(model, given)
    assert "its options are" in str(error.value)


def test_composite_options_need_composite_and_unused_ones_are_recorded_as_none():
    with pytest.raises(ValueError, match="--pretrain-epochs only apply"):
        model_options("single", {"pretrain_epochs": 3})
    with pytest.raises(ValueError, match="--future"):
        model_options("single", {"pretrain": "scratch", "future": 5})
    with pytest.raises(ValueError, match="--labelled-fraction"):
        model_options("single", {"labelled_fraction": 0.1})
    scratch = model_options("single", {"pretrain": "scratch", "labelled_fraction": 0.1})
    assert scratch.pretrain_epochs is None and scratch.future is None and scratch.labelled_fraction == 0.1
    plain = model_options("mplstm", {})
    assert plain.future is None and plain.pretrain is None
    assert model_options("single", {"pretrain": "composite"}).future == 10
    with pytest.raises(ValueError, match="--crop"):
        model_options("convlstm", {"crop": 64})
    with pytest.raises(ValueError, match="dropout"):
        model_options("convlstm", {"dropout": 1.5})
    assert ConvLSTMOptions().batch_size == 8


def test_timesteps_follow_the_clip_length_and_truncation_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="mpview"):
        assert resolve_timesteps(None, 29) == 29
        assert resolve_timesteps(None, None) == 20
        assert resolve_timesteps(None, 20, future=10) == 10
        assert not any("dropped" in r.message for r in caplog.records)
        assert resolve_timesteps(20, 29) == 20
    assert any("29 frames" in r.message and "9 dropped" in r.message for r in caplog.records)
