"""The released memory-model checkpoint onto our mvm layers: key and shape mapping (no torch needed), refusals, and,
with torch, outputs equal to the authors'-structure PyTorch modules' and `convert` then `evaluate` on an LRW tree."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.errors import ConfigError, DataError
from pipeline.models.mvm import convert as mapping
from pipeline.storage.atomic import file_sha256
from pipeline.verbs.convert import ConvertConfig, converted_spec, networks

FIXTURE = Path(__file__).with_name("mvm_state_dict_shapes.json")
LRW_COUNTS = {  # the authors' modules as their train.py builds them for LRW (slots 112, heads 8)
    "v_front_state_dict": 15_388_800,
    "a_front_state_dict": 4_102_528,
    "mem_state_dict": 2_740_736,
    "tcn_state_dict": 38_136_308,
}


def fixture_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """The committed keys and shapes of the authors' LRW checkpoint (batch norm step counters included)."""
    return {g: {k: tuple(v) for k, v in keys.items()} for g, keys in json.loads(FIXTURE.read_text()).items()}


def authors_networks(classes: int = 500, frames: int = 29):
    """Our (training, inference) networks built as a converted run builds them, for ``classes`` words."""
    arch = mapping.Architecture(classes=classes, slots=112, heads=8)
    names = [f"W{i:03d}" for i in range(classes)]
    spec = converted_spec(ConvertConfig(checkpoint="released.ckpt"), names, "v1", arch, frames, "0" * 64)
    return networks(spec)


@pytest.fixture(scope="module")
def lrw_train_network():
    """The full LRW training network (all four checkpoint groups' weights), built once for the mapping tests."""
    keras.utils.clear_session()
    return authors_networks().train


def test_fixture_keys_and_shapes_map_one_to_one_onto_our_weights(lrw_train_network):
    shapes = fixture_shapes()
    tensors = {g: {k: s for k, s in keys.items() if not k.endswith(mapping.DROPPED)} for g, keys in shapes.items()}
    assignments = mapping.plan(lrw_train_network, tensors)
    assert len(assignments) == sum(len(keys) for keys in tensors.values()) == len(lrw_train_network.weights)
    assert len({id(a.variable) for a in assignments}) == len(assignments)
    counted = {g: 0 for g in mapping.GROUPS}
    for a in assignments:
        if a.variable.trainable:
            counted[a.group] += int(np.prod(shapes[a.group][a.key]))
    assert counted == LRW_COUNTS
    assert mapping.architecture(tensors) == mapping.Architecture(classes=500, slots=112, heads=8)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s["tcn_state_dict"].pop("tcn.mb_ms_tcn.layer2.cbcr1_2.conv.bias"),
            r"lacks tensors .*tcn_state_dict\[tcn\.mb_ms_tcn\.layer2\.cbcr1_2\.conv\.bias\]",
        ),
        (lambda s: s["mem_state_dict"].pop("key"), r"lacks tensors .*mem_state_dict\[key\]"),
        (
            lambda s: s["v_front_state_dict"].update({"resnet.layer5.0.res_layer.1.weight": (64, 64, 3, 3)}),
            r"no weight in our model: v_front_state_dict\[resnet\.layer5\.0\.res_layer\.1\.weight\]",
        ),
        (
            lambda s: s["mem_state_dict"].update({"v_up.weight": (512, 512)}),
            r"no weight in our model: mem_state_dict\[v_up\.weight\]",
        ),
        (
            lambda s: s["a_front_state_dict"].update({"Linear.0.weight": (512, 2560)}),
            r"wrong shape: a_front_state_dict\[Linear\.0\.weight\] has shape \[512, 2560\]",
        ),
        (
            lambda s: s["tcn_state_dict"].update({"tcn.mb_ms_tcn.mem3.key": (448, 128)}),
            r"wrong shape: tcn_state_dict\[tcn\.mb_ms_tcn\.mem3\.key\] has shape \[448, 128\]",
        ),
    ],
    ids=["missing-bias", "missing-key-memory", "extra-layer", "extra-v-up", "misshaped-linear", "misshaped-key"],
)
def test_a_missing_extra_or_misshaped_tensor_is_refused_by_name(lrw_train_network, change, message):
    shapes = fixture_shapes()
    change(shapes)
    with pytest.raises(DataError, match=message) as caught:
        mapping.plan(lrw_train_network, shapes)
    assert "\n" not in str(caught.value)


def test_head_rows_follow_the_manifest_order():
    tensors = {
        "tcn_state_dict": {"tcn.tcn_output.weight": np.arange(6.0).reshape(3, 2), "tcn.tcn_output.bias": np.arange(3.0)}
    }
    assert not mapping.reorder_head(tensors, ["A", "B", "C"])
    assert mapping.reorder_head(tensors, ["C", "A", "B"])
    assert tensors["tcn_state_dict"]["tcn.tcn_output.bias"].tolist() == [2.0, 0.0, 1.0]
    assert tensors["tcn_state_dict"]["tcn.tcn_output.weight"][0].tolist() == [4.0, 5.0]


def test_without_torch_reading_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ConfigError, match=r"needs torch: pip install 'mpview\[torch\]'"):
        mapping.read_checkpoint(tmp_path / "released.ckpt")


# ---- with torch -------------------------------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def test_the_fixture_is_the_reference_modules_layout_and_their_counts_the_authors():
    _torch()
    import mvm_torch_reference as reference

    modules = reference.build()
    assert reference.parameter_counts(modules) == LRW_COUNTS
    assert sum(LRW_COUNTS.values()) - LRW_COUNTS["a_front_state_dict"] == 56_265_844  # the network used at test
    assert reference.shapes(modules) == {
        g: {k: list(v) for k, v in keys.items()} for g, keys in fixture_shapes().items()
    }


def test_checkpoint_files_that_are_not_the_authors_layout_are_refused(tmp_path):
    torch = _torch()
    groups = {g: {"w": torch.zeros(2)} for g in mapping.GROUPS}
    cases = {
        "list.ckpt": ([1, 2], r"holds a list, not the dict of v_front_state_dict"),
        "missing.ckpt": ({g: v for g, v in groups.items() if g != "mem_state_dict"}, r"missing mem_state_dict"),
        "extra.ckpt": ({**groups, "optimizer": {}}, r"unexpected optimizer"),
        "object.ckpt": ({**groups, "tcn_state_dict": {"w": Path("x")}}, r"not a readable PyTorch checkpoint"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(DataError, match=message):
            mapping.read_checkpoint(tmp_path / name)
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(DataError, match="text.ckpt: not a readable PyTorch checkpoint"):
        mapping.read_checkpoint(tmp_path / "text.ckpt")
    with pytest.raises(DataError, match="no such checkpoint file"):
        mapping.read_checkpoint(tmp_path / "absent.ckpt")


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Authors'-structure modules for 3 words with random weights and batch norm statistics, saved as they save."""
    torch = _torch()
    import mvm_torch_reference as reference

    torch.manual_seed(0)
    modules = reference.build(classes=3)
    reference.randomise(modules, seed=1)
    path = tmp_path_factory.mktemp("released") / "released.ckpt"
    torch.save(reference.checkpoint(modules), path)
    return modules, path


def test_converted_networks_compute_what_the_pytorch_modules_compute(released):
    torch = _torch()
    import mvm_torch_reference as reference

    modules, path = released
    keras.utils.clear_session()
    built = authors_networks(classes=3)
    tensors = mapping.read_checkpoint(path)
    assert mapping.load_into(built.train, tensors) == len(built.train.weights)
    rng = np.random.default_rng(2)
    clips = rng.normal(size=(2, 29, 112, 112, 1)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(built.infer(clips, training=False))
    theirs = reference.inference_logits(modules, torch.from_numpy(clips).permute(0, 4, 1, 2, 3)).numpy()
    assert np.abs(theirs).max() > 0.1  # logits that say something
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    mels = rng.normal(size=(2, 29, 4, 80)).astype(np.float32)
    audio_front = keras.Model(built.train.get_layer("audio").output, built.train.get_layer("a_front_Linear_1").output)
    ours_audio = keras.ops.convert_to_numpy(audio_front(mels, training=False))
    spectrogram = torch.from_numpy(mels).permute(0, 3, 1, 2).reshape(2, 1, 80, 29 * 4)
    with torch.no_grad():
        theirs_audio = modules["a_front_state_dict"](spectrogram).numpy()
    np.testing.assert_allclose(ours_audio, theirs_audio, rtol=0, atol=1e-5 * np.abs(theirs_audio).max())


@pytest.mark.slow
def test_convert_then_evaluate_scores_the_released_model(released, tmp_path, grid_dir, caplog):
    torch = _torch()
    import mvm_torch_reference as reference

    import cli
    from pipeline.training.experiment import RunSpec, load_inputs
    from pipeline.training.fit import load_checkpoint
    from pipeline.workspace import Workspace
    from trees import lrw_tree

    modules, path = released
    root = lrw_tree(tmp_path / "lrw", grid_dir, per_split={"test": 1})
    work = tmp_path / "work"
    assert cli.main(["prepare", "--quiet", "--work", str(work), "--dataset", "lrw", "--root", str(root), "--gray"]) == 0
    keras.utils.clear_session()
    assert cli.main(["convert", "--quiet", "mvm", str(path), "--work", str(work)]) == 0
    run = Workspace(work).run("mvm-authors")
    spec = RunSpec.load(run)
    assert spec.options["converted"]["sha256"] == file_sha256(path)
    assert spec.options["recipe"] == {"name": "lrw", "box": 136, "size": 112} and spec.timesteps == 29
    assert spec.classes == ["ABOUT", "BECAUSE", "LITTLE"]
    assert spec.options["converted"]["preprocessing"]["normalise"] == "(x / 255 - 0.4136) / 0.1700"
    assert cli.main(["evaluate", "--quiet", "--work", str(work), "--tta"]) == 0
    report = json.loads((work / "reports" / "mvm-authors.json").read_text())
    assert report["metrics"]["n_samples"] == 3 and report["run_info"]["tta"] is True
    # what evaluate scored: the saved network on the evaluation view equals the PyTorch modules on it
    manifest = Workspace(work).load_manifest()
    clips = load_inputs(manifest, spec, "test", work).inputs[0]
    ours = load_checkpoint(Workspace.checkpoint(run)).predict(clips, verbose=0)
    theirs = reference.inference_logits(modules, torch.from_numpy(clips).permute(0, 4, 1, 2, 3)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())
    # a second conversion into the same name is refused; a checkpoint for other words too, naming both counts
    caplog.clear()
    assert cli.main(["convert", "--quiet", "mvm", str(path), "--work", str(work)]) == 2
    state = torch.load(path, weights_only=True)
    state["tcn_state_dict"]["tcn.tcn_output.weight"] = torch.zeros(4, 768)
    state["tcn_state_dict"]["tcn.tcn_output.bias"] = torch.zeros(4)
    torch.save(state, tmp_path / "four.ckpt")
    assert cli.main(["convert", "--quiet", "mvm", str(tmp_path / "four.ckpt"), "--work", str(work), "--name", "x"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "already holds a run" in errors[0]
    assert "its classifier has 4 classes, the manifest" in errors[1] and "has 3" in errors[1]
    assert not (Workspace(work).run("x") / "best.keras").exists()
    state = torch.load(path, weights_only=True)
    state["mem_state_dict"]["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "extra.ckpt")
    caplog.clear()
    assert (
        cli.main(["convert", "--quiet", "mvm", str(tmp_path / "extra.ckpt"), "--work", str(work), "--name", "y"]) == 2
    )
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"{tmp_path / 'extra.ckpt'}: checkpoint tensors with no weight in our model: mem_state_dict[extra.weight]"
    ]
    colour = tmp_path / "colour"
    assert cli.main(["prepare", "--quiet", "--work", str(colour), "--dataset", "lrw", "--root", str(root)]) == 0
    caplog.clear()
    assert cli.main(["convert", "--quiet", "mvm", str(path), "--work", str(colour)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["perspective v1's ROI clips have 3 channels, where it reads gray frames (prepare with --gray)"]
