"""Dataset recipes on small trees in the real layouts (empty placeholder files: recipes never decode)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline.manifest import Manifest
from pipeline.recipes import RECIPES, RecipeRegistry
from pipeline.recipes.common import RecipeError
from pipeline.recipes.generic import prepare_generic
from pipeline.recipes.lightfield import prepare_lightfield, prepare_lightfield_grid, select_views
from pipeline.recipes.lrw import prepare_lrw
from pipeline.recipes.mplstm_layout import prepare_mplstm_layout
from pipeline.recipes.ouluvs2 import PHRASES, prepare_ouluvs2, utterance_label


def touch(root: Path, *names: str) -> None:
    """Create empty files (and their folders) under ``root``."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def reasons(manifest: Manifest) -> dict[str, str]:
    """Problem reason by sample id."""
    return {p["id"]: p["reason"] for p in manifest.problems}


def roundtrip(manifest: Manifest, tmp_path: Path) -> Manifest:
    """Save and reload, so every recipe's output passes the manifest's own validation."""
    path = tmp_path / "out" / "manifest.jsonl"
    manifest.save(path)
    return Manifest.load(path)


# -- registry ------------------------------------------------------------------------------------


def test_registry_names_and_lazy_import():
    assert {
        "ouluvs2",
        "mplstm",
        "lightfield",
        "lightfield-grid",
        "lrw",
        "generic",
        "synthetic",
        "moving-digits",
    } <= set(RECIPES)
    assert RECIPES["lrw"] is prepare_lrw
    broken = RecipeRegistry({"x": "pipeline.recipes.no_such_module:prepare_x"})
    assert "x" in broken and list(broken) == ["x"]
    with pytest.raises(ImportError, match="'x' is unavailable"):
        broken["x"]


# -- OuluVS2 -------------------------------------------------------------------------------------


def oulu_cropped(root: Path, speakers=(1, 4, 6, 29), utterances=(1, 30, 31, 34, 60, 61)) -> Path:
    """``cropped_mouth_mp4_phrase`` / ``_digit`` style tree: <spk>/<view>/s<spk>_v<view>_u<utt>.mp4."""
    base = root / "cropped"
    for s in speakers:
        for v in range(1, 6):
            for u in utterances:
                touch(base, f"{s}/{v}/s{s}_v{v}_u{u}.mp4")
    return base


def test_ouluvs2_label_formula():
    assert [utterance_label(u) for u in (31, 33, 34, 45, 58, 60)] == [0, 0, 1, 4, 9, 9]
    assert [utterance_label(u) for u in (1, 3, 4, 30)] == [0, 0, 1, 9]


def test_ouluvs2_phrases_speaker_independent(tmp_path, caplog):
    base = oulu_cropped(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mpview"):
        m = prepare_ouluvs2(base)
    assert m.root == str(base) and Path(m.root).is_absolute()
    assert m.perspectives == ["v1", "v2", "v3", "v4", "v5"]
    assert m.classes == list(PHRASES) and m.classes[0] == "Excuse me" and m.classes[9] == "You are welcome"
    samples = m.by_id()
    assert sorted(samples) == sorted(f"s{s}_u{u}" for s in (1, 4, 6) for u in (31, 34, 60))
    assert samples["s1_u31"].label == "Excuse me" and samples["s1_u34"].label == "Goodbye"
    assert samples["s1_u60"].label == "You are welcome" and samples["s1_u60"].meta["repetition"] == 3
    assert (
        samples["s6_u31"].split == "test" and samples["s1_u31"].split == "train" and samples["s4_u31"].split == "train"
    )
    assert samples["s1_u31"].speaker == "s1"
    assert samples["s1_u31"].sources["v3"].path == "1/3/s1_v3_u31.mp4"
    assert m.info["view_angles"] == {"v1": 0, "v2": 30, "v3": 45, "v4": 60, "v5": 90}
    problems = reasons(m)
    assert set(problems) == {"s29_u31", "s29_u34", "s29_u60"} and "excluded" in problems["s29_u31"]
    assert "3 problem(s)" in caplog.text
    assert len(roundtrip(m, tmp_path)) == 9


def test_ouluvs2_digits_views_and_28_12_12(tmp_path):
    m = prepare_ouluvs2(oulu_cropped(tmp_path), subset="digits", perspectives=[1, "v3", 5], split="28-12-12")
    assert m.perspectives == ["v1", "v3", "v5"]
    assert m.classes == [f"digits-{i}" for i in range(1, 11)]
    samples = m.by_id()
    assert samples["s1_u1"].label == "digits-1" and samples["s1_u30"].label == "digits-10"
    assert set(samples["s1_u1"].sources) == {"v1", "v3", "v5"}
    assert (samples["s1_u1"].split, samples["s4_u1"].split, samples["s6_u1"].split) == ("train", "val", "test")
    with pytest.raises(RecipeError, match="views"):
        prepare_ouluvs2(tmp_path / "cropped", perspectives=[6])


def test_ouluvs2_missing_perspective_and_unknown_speaker(tmp_path):
    base = oulu_cropped(tmp_path, speakers=(1, 54), utterances=(31, 32))
    (base / "1/3/s1_v3_u32.mp4").unlink()
    m = prepare_ouluvs2(base)
    problems = {p["id"]: p for p in m.problems}
    assert problems["s1_u32"]["reason"] == "missing perspective v3" and problems["s1_u32"]["path"].endswith(".mp4")
    assert "not in split definition" in problems["s54_u31"]["reason"]
    assert [s.id for s in m] == ["s1_u31"]
    assert [s.id for s in prepare_ouluvs2(base, perspectives=[1, 5])] == ["s1_u31", "s1_u32"]


def test_ouluvs2_original_videos_and_duplicates(tmp_path):
    for v in range(1, 6):
        touch(tmp_path, f"orig_s2/orig/s2_v{v}_u31.mp4", f"orig_s2/orig/s2_v{v}_u37.mp4")
    m = prepare_ouluvs2(tmp_path)
    assert [(s.id, s.label) for s in m] == [("s2_u31", "Excuse me"), ("s2_u37", "Hello")]
    assert m.by_id()["s2_u31"].sources["v1"].path == "orig_s2/orig/s2_v1_u31.mp4"
    touch(tmp_path, "copy/s2_v1_u31.mp4")
    assert "duplicate source for perspective v1" in reasons(prepare_ouluvs2(tmp_path))["s2_u31"]


# -- MP-LSTM layout ------------------------------------------------------------------------------


def test_mplstm_layout(tmp_path):
    for cam in ("CAM1", "CAM2"):
        touch(tmp_path, f"Train/{cam}/1/s1_u31.mp4", f"Train/{cam}/2/s1_u34.mp4", f"Test/{cam}/1/s6_u31.mp4")
    touch(tmp_path, "Validation/CAM1/2/s4_u34.mp4")  # CAM2 missing
    m = prepare_mplstm_layout(tmp_path)
    assert m.perspectives == ["CAM1", "CAM2"] and m.classes == ["1", "2"]
    assert {s.id: s.split for s in m} == {"train-1-s1_u31": "train", "train-2-s1_u34": "train", "test-1-s6_u31": "test"}
    assert m.by_id()["train-1-s1_u31"].sources["CAM2"].path == "Train/CAM2/1/s1_u31.mp4"
    assert reasons(m) == {"val-2-s4_u34": "missing perspective CAM2"}
    only = prepare_mplstm_layout(tmp_path, perspectives=[1])
    assert only.perspectives == ["CAM1"] and only.by_id()["val-2-s4_u34"].split == "val" and not only.problems
    with pytest.raises(RecipeError, match="camera"):
        prepare_mplstm_layout(tmp_path, perspectives=["CAM3"])
    roundtrip(m, tmp_path)


# -- light field ---------------------------------------------------------------------------------


def test_lightfield_folders_match_hor_and_ver(tmp_path):
    touch(tmp_path, "Train/Hor/01/01_1.mp4", "Train/Ver/01/01_1.mp4")
    touch(tmp_path, "Train/Hor/02/02_hor.mp4", "Train/Ver/02/02_ver.mp4")
    touch(tmp_path, *(f"Test/{d}/01/seq/{i:03d}.png" for d in ("Hor", "Ver") for i in (1, 2, 10)))
    touch(tmp_path, "Validation/Hor/53/x.mp4")  # no Ver
    m = prepare_lightfield(tmp_path)
    assert m.perspectives == ["hor", "ver"] and m.classes == ["01", "02"]
    samples = m.by_id()
    assert set(samples) == {"train-01-01_1", "train-02-02", "test-01-seq"}
    seq = samples["test-01-seq"].sources["ver"]
    assert seq.kind == "images" and seq.frames == [
        "Test/Ver/01/seq/001.png",
        "Test/Ver/01/seq/002.png",
        "Test/Ver/01/seq/010.png",
    ]
    assert samples["train-02-02"].sources["ver"].path == "Train/Ver/02/02_ver.mp4"
    assert reasons(m) == {"val-53-x": "missing perspective ver"}
    assert prepare_lightfield(tmp_path, perspectives=["hor"]).by_id()["val-53-x"].split == "val"
    roundtrip(m, tmp_path)


def grid(root: Path, capture: str, size: int = 15, name: str = "r{r:02d}_c{c:02d}.png", start: int = 0) -> None:
    touch(
        root,
        *(f"{capture}/{name.format(r=r, c=c)}" for r in range(start, start + size) for c in range(start, start + size)),
    )


def test_lightfield_grid_central_row_and_column(tmp_path):
    grid(tmp_path, "Train/07/cap1")
    m = prepare_lightfield_grid(tmp_path)
    s = m.by_id()["Train-07-cap1"]
    assert (s.label, s.split, s.meta["row"], s.meta["column"], s.meta["grid"]) == ("07", "train", 7, 7, [15, 15])
    hor, ver = s.sources["hor"], s.sources["ver"]
    assert hor.kind == ver.kind == "images" and hor.path == "Train/07/cap1"
    assert hor.frames == [f"Train/07/cap1/r07_c{c:02d}.png" for c in range(15)]
    assert ver.frames == [f"Train/07/cap1/r{r:02d}_c07.png" for r in range(15)]
    roundtrip(m, tmp_path)


def test_lightfield_grid_border_n_views_and_explicit_row(tmp_path):
    grid(tmp_path, "Test/01/cap", name="img_{r:02d}_{c:02d}.png", start=1)  # 1-based 15x15, centre 8
    s = prepare_lightfield_grid(tmp_path, border=1, n_views=5).by_id()["Test-01-cap"]
    assert s.sources["hor"].frames == [f"Test/01/cap/img_08_{c:02d}.png" for c in range(6, 11)]
    assert s.sources["ver"].frames == [f"Test/01/cap/img_{r:02d}_08.png" for r in range(6, 11)]
    s = prepare_lightfield_grid(tmp_path, perspectives=["hor"], row=3, border=1).by_id()["Test-01-cap"]
    assert s.sources["hor"].frames == [f"Test/01/cap/img_03_{c:02d}.png" for c in range(2, 15)]
    assert select_views(list(range(15)), list(range(15)), border=2)["hor"][0] == (7, 2)
    with pytest.raises(ValueError, match="not among"):
        select_views(list(range(15)), list(range(15)), row=0, border=1)
    with pytest.raises(ValueError, match="only 13"):
        select_views(list(range(15)), list(range(15)), n_views=14, border=1)


def test_lightfield_grid_missing_view_labels_csv_and_assigned_splits(tmp_path):
    for i in range(6):
        grid(tmp_path, f"captures/c{i}", size=5, name="{r}_{c}.png")
    (tmp_path / "captures/c5/2_4.png").unlink()
    (tmp_path / "labels.csv").write_text("capture,label\n" + "".join(f"c{i},{i % 2 + 1:02d}\n" for i in range(6)))
    m = prepare_lightfield_grid(tmp_path, labels="labels.csv", seed=1)
    assert reasons(m) == {"captures-c5": "missing grid view(s) row 2 col 4"}
    assert m.classes == ["01", "02"] and len(m) == 5
    assert all(s.split in ("train", "val", "test") for s in m)
    assert m.by_id()["captures-c0"].sources["hor"].frames[0] == "captures/c0/2_0.png"


# -- LRW -----------------------------------------------------------------------------------------


def test_lrw(tmp_path):
    for word in ("ABOUT", "ZERO"):
        for split in ("train", "val", "test"):
            touch(tmp_path, f"{word}/{split}/{word}_00001.mp4", f"{word}/{split}/{word}_00001.txt")
    touch(tmp_path, "ABOUT/train/ABOUT_00002.mp4", "ABOUT/train/about-3.mp4")
    m = prepare_lrw(tmp_path)
    assert m.perspectives == ["v1"] and m.classes == ["ABOUT", "ZERO"] and len(m) == 7
    s = m.by_id()["train-ABOUT_00001"]
    assert (s.label, s.split, s.sources["v1"].path) == ("ABOUT", "train", "ABOUT/train/ABOUT_00001.mp4")
    assert s.meta["fixed_box"] == [59, 95, 195, 231] and s.meta["frames"] == 29
    assert s.meta["metadata"] == "ABOUT/train/ABOUT_00001.txt" and "metadata" not in m.by_id()["train-ABOUT_00002"].meta
    assert m.by_id()["val-ZERO_00001"].split == "val"
    assert "unexpected file name" in reasons(m)["train-about_3"]
    assert prepare_lrw(tmp_path, words=["zero"]).classes == ["ZERO"]
    assert prepare_lrw(tmp_path, max_words=1, splits=["test"]).classes == ["ABOUT"]
    with pytest.raises(RecipeError, match="HELLO"):
        prepare_lrw(tmp_path, words=["HELLO"])
    roundtrip(m, tmp_path)


# -- generic -------------------------------------------------------------------------------------


def test_generic_folders_with_splits(tmp_path):
    for view in ("front", "side"):
        touch(tmp_path, f"Train/{view}/yes/a.mp4", f"Validation/{view}/no/b.mp4", f"test/{view}/no/c.avi")
    touch(tmp_path, "Train/front/no/d.mp4")
    m = prepare_generic(tmp_path)
    assert m.perspectives == ["front", "side"] and m.classes == ["no", "yes"]
    assert {s.id: s.split for s in m} == {"train-yes-a": "train", "val-no-b": "val", "test-no-c": "test"}
    assert reasons(m) == {"train-no-d": "missing perspective side"}
    assert prepare_generic(tmp_path, perspectives=["front"]).by_id()["train-no-d"].label == "no"


def test_generic_folders_assigned_speaker_disjoint(tmp_path):
    for spk in range(10):
        for word in ("yes", "no"):
            touch(tmp_path, f"cam1/{word}/spk{spk}_{word}.mp4", f"cam2/{word}/spk{spk}_{word}.mp4")
    m = prepare_generic(tmp_path, speaker_pattern=r"(?P<speaker>spk\d+)_", seed=5)
    assert len(m) == 20 and {s.split for s in m} == {"train", "val", "test"}
    splits_by_speaker: dict[str, set] = {}
    for s in m:
        splits_by_speaker.setdefault(s.speaker, set()).add(s.split)
    assert len(splits_by_speaker) == 10 and all(len(v) == 1 for v in splits_by_speaker.values())
    assert [s.split for s in m] == [
        s.split for s in prepare_generic(tmp_path, speaker_pattern=r"(?P<speaker>spk\d+)_", seed=5)
    ]


def test_generic_split_without_speakers_says_it_is_by_clip_and_how_to_fix_it(tmp_path, caplog):
    """No speaker known: the split is by clip, with a warning that names the recipe's way to give speakers."""
    for spk in range(4):
        for word in ("yes", "no"):
            touch(tmp_path, f"cam1/{word}/spk{spk}_{word}.mp4")
    with caplog.at_level("INFO"):
        prepare_generic(tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "by clip, not by speaker" in w and "test clips may share speakers" in w and "speaker_pattern" in w
        for w in warnings
    )
    assert "by clip)" in caplog.text and "by speaker)" not in caplog.text
    (tmp_path / "list.csv").write_text("id,label,path\na,yes,cam1/yes/spk0_yes.mp4\nb,no,cam1/no/spk0_no.mp4\n")
    caplog.clear()
    prepare_generic(tmp_path, listing="list.csv", fractions=(0.5, 0.0, 0.5))
    assert "speaker column" in caplog.text and "by clip, not by speaker" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        prepare_generic(tmp_path, speaker_pattern=r"(?P<speaker>spk\d+)_")
    assert "by speaker)" in caplog.text and "not by speaker" not in caplog.text


def test_generic_csv_wide_and_long(tmp_path):
    touch(
        tmp_path, "clips/a_front.mp4", "clips/a_side.mp4", "clips/b_front.mp4", "clips/b_side.mp4", "clips/c_front.mp4"
    )
    (tmp_path / "clips/frames").mkdir()
    touch(tmp_path, "clips/frames/1.png", "clips/frames/2.png")
    (tmp_path / "wide.csv").write_text(
        "id,label,speaker,split,path:front,path:side\n"
        "a,yes,s1,train,clips/a_front.mp4,clips/a_side.mp4\n"
        "b,no,s2,Validation,clips/b_front.mp4,clips/b_side.mp4\n"
        "c,no,s3,test,clips/c_front.mp4,\n"
        "d,no,s4,test,clips/frames,clips/missing.mp4\n"
        "e,no,s5,holdout,clips/a_front.mp4,clips/a_side.mp4\n"
    )
    m = prepare_generic(tmp_path, listing="wide.csv")
    assert m.perspectives == ["front", "side"] and {s.id: s.split for s in m} == {"a": "train", "b": "val"}
    problems = reasons(m)
    assert (
        problems["c"] == "missing perspective side"
        and "not found" in problems["d"]
        and "unknown split" in problems["e"]
    )
    (tmp_path / "long.csv").write_text(
        "id,label,view,path\na,yes,front,clips/a_front.mp4\na,yes,side,clips/a_side.mp4\nb,no,front,clips/frames\nb,no,side,clips/b_side.mp4\n"
    )
    m = prepare_generic(tmp_path, listing=tmp_path / "long.csv", fractions=(0.5, 0.0, 0.5))
    assert m.by_id()["b"].sources["front"].frames == ["clips/frames/1.png", "clips/frames/2.png"]
    assert sorted(s.split for s in m) == ["test", "train"]


def test_generic_jsonl_and_mixed_splits(tmp_path):
    touch(tmp_path, "x.mp4", "y.mp4")
    lines = [
        {"id": "x", "label": "a", "split": "train", "path": "x.mp4"},
        {"id": "y", "label": "b", "paths": {"v1": "y.mp4"}},
    ]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    m = prepare_generic(tmp_path, listing="list.jsonl")
    assert [s.id for s in m] == ["x"] and m.perspectives == ["v1"]
    assert reasons(m) == {"y": "no split given while other samples have one"}


def test_generic_listing_validated_columns_labels_and_encoding(tmp_path):
    """A listing without an id or label column is refused naming both; an empty label is a per-row problem; bytes
    that are not UTF-8 are refused naming the file, line and column (never a decoding traceback)."""
    touch(tmp_path, "x.mp4", "y.mp4")
    (tmp_path / "nolabel.csv").write_text("id,path\nx,x.mp4\n")
    with pytest.raises(RecipeError, match=r"nolabel.csv:1: listing has no 'label' column \(its header: id, path\)"):
        prepare_generic(tmp_path, listing="nolabel.csv")
    (tmp_path / "bare.csv").write_text("path\nx.mp4\n")
    with pytest.raises(RecipeError, match="no 'id' or 'label' column"):
        prepare_generic(tmp_path, listing="bare.csv")
    (tmp_path / "empty.csv").write_text("id,label,split,path\nx,a,train,x.mp4\ny, ,train,y.mp4\n")
    m = prepare_generic(tmp_path, listing="empty.csv")
    assert [s.id for s in m] == ["x"] and reasons(m) == {"y": "row without a label"} and m.classes == ["a"]
    (tmp_path / "list.jsonl").write_text(
        '{"id": "x", "label": "a", "split": "train", "path": "x.mp4"}\n{"id": "y", "path": "y.mp4"}\n'
    )
    assert reasons(prepare_generic(tmp_path, listing="list.jsonl")) == {"y": "row without a label"}
    (tmp_path / "latin.csv").write_bytes("id,label,path\nx,a,x.mp4\ny,caf\u00e9,y.mp4\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin.csv:3: not UTF-8 text \(byte 0xe9 at column 6\)"):
        prepare_generic(tmp_path, listing="latin.csv")
    (tmp_path / "latin.jsonl").write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(RecipeError, match=r"latin.jsonl:1: not UTF-8"):
        prepare_generic(tmp_path, listing="latin.jsonl")


def test_recipe_refuses_empty_root(tmp_path):
    with pytest.raises(RecipeError, match="no usable samples"):
        prepare_lrw(tmp_path)
    with pytest.raises(RecipeError, match="no clips"):
        prepare_generic(tmp_path)
    with pytest.raises(RecipeError, match="not a folder"):
        prepare_generic(tmp_path / "absent")


def test_ouluvs2_problem_warning_names_the_perspective_and_a_file(tmp_path, caplog):
    """The summary of problems says which perspective is missing and gives an example file, not 'vN'."""
    base = oulu_cropped(tmp_path, speakers=(1, 2), utterances=(31,))
    for speaker in (1, 2):
        (base / f"{speaker}/5/s{speaker}_v5_u31.mp4").unlink()
    (base / "1/3/s1_v3_u31.mp4").unlink()
    with caplog.at_level("WARNING"), pytest.raises(RecipeError, match="missing perspective v5"):
        prepare_ouluvs2(base)
    m = prepare_ouluvs2(base, perspectives=[1, 3])
    assert "1 x missing perspective v3 (e.g. s1_u31: 1/1/s1_v1_u31.mp4)" in caplog.text
    assert [s.id for s in m] == ["s2_u31"]


def test_ouluvs2_cropped_release_folders_choose_the_whole_frame_roi(tmp_path):
    """Files under cropped_mouth_mp4_* are mouth-only: the manifest says to crop whole frames; originals do not."""
    cropped = tmp_path / "OuluVS2" / "cropped_mouth_mp4_phrase"
    original = tmp_path / "OuluVS2" / "orig"
    for s in (1, 2):
        for v in (1, 2):
            touch(cropped, f"{s}/{v}/s{s}_v{v}_u31.mp4")
            touch(original, f"orig_s{s}/s{s}_v{v}_u31.mp4")
    assert prepare_ouluvs2(cropped, perspectives=[1, 2]).info["roi"] == "frame"
    assert "roi" not in prepare_ouluvs2(original, perspectives=[1, 2]).info
