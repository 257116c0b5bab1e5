"""``medfed predict``: model.pt contents, scoring real and synthetic DICOM, formats, exit codes.

A model saved by ``RunDirectory.save_model`` from a freshly initialised network is enough
here: what is checked is the path from files to rows (every file accounted for, the saved
threshold applied, no PHI in the output), not the model's quality.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pydicom
import pytest
import torch
from flwr.app import ArrayRecord

from common.config import MedfedConfig
from common.data.dicom import quiet_pydicom
from common.data.manifest import walk_folder
from common.data.phi import PHI_TAGS
from common.data.synthetic import generate_site
from common.model_file import data_settings, load_saved_model
from common.models import build_model
from medfed.cli import main
from server.rundir import MODEL_FILE, RunDirectory
from tests.shared_data import DICOM_DIR

UID_FIELDS = ("sop_instance_uid", "series_instance_uid", "explanation")


def _config(tmp_path: Path, **overrides: object) -> MedfedConfig:
    flat = {"run.run-dir": str(tmp_path / "run"), "data.image-size": 32, **overrides}
    return MedfedConfig().replace(**flat)  # type: ignore[arg-type]


def _save(config: MedfedConfig, threshold: float | None) -> Path:
    torch.manual_seed(0)
    run = RunDirectory.create(config)
    model = build_model(config.model, config.data.channels)
    run.save_model(ArrayRecord(model.state_dict()), config, 4, threshold=threshold)
    return run.path


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A small synthetic hospital (12 CR images with fake names, labels.csv beside them)."""
    root = tmp_path_factory.mktemp("site") / "hospital-a"
    return generate_site(root, 0, seed=3, num_images=12, image_size=48)


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _json(argv: list[str], capsys) -> tuple[dict, str]:
    code, out, err = _run([*argv, "--format", "json"], capsys)
    assert code == 0, err
    return json.loads(out), err


def _phi_values(folder: Path) -> set[str]:
    """Every identifying tag value of the DICOM files under ``folder`` (4+ characters)."""
    values: set[str] = set()
    with quiet_pydicom():
        for path in walk_folder(folder)[0]:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            for keyword in PHI_TAGS:
                value = str(ds.get(keyword, "") or "").strip()
                if len(value) >= 4:
                    values.add(value)
    return values


def _without_uids(document: dict) -> str:
    rows = [
        {k: v for k, v in row.items() if k not in UID_FIELDS} for row in document["predictions"]
    ]
    return json.dumps({**document, "predictions": rows})


def test_save_model_records_threshold_and_data_settings(tmp_path):
    config = _config(tmp_path, **{"data.frames": "all", "data.resize": "pad"})
    run = _save(config, threshold=0.37)

    raw = torch.load(run / MODEL_FILE, weights_only=True)
    saved = load_saved_model(run)

    assert raw["threshold"] == pytest.approx(0.37) and raw["round"] == 4
    assert raw["data"] == data_settings(config)
    assert raw["data"]["image-size"] == 32 and raw["data"]["class-names"] == "normal,opacity"
    assert saved.data == config.data and not saved.defaulted
    assert saved.class_names == ("normal", "opacity") and saved.threshold == pytest.approx(0.37)


def test_predicts_every_shared_dicom_file_without_phi(tmp_path, capsys):
    run = _save(_config(tmp_path), threshold=None)
    listed, side = walk_folder(DICOM_DIR)
    expected = {str(p.relative_to(DICOM_DIR)) for p in listed}
    expected |= {str(p.path.relative_to(DICOM_DIR)) for p in side}

    document, err = _json(["predict", str(run), str(DICOM_DIR)], capsys)

    rows = document["predictions"]
    assert {row["file"] for row in rows} == expected  # every file, scored or with a reason
    assert len({row["file"] for row in rows}) == len(rows)  # 2D middle: one row per file
    scored = [row for row in rows if row["error"] is None]
    dicom = [p for p in listed if p.suffix == ".dcm"]
    assert len(scored) == len(dicom) and document["summary"]["scored"] == len(dicom)
    for row in scored:
        assert row["predicted"] in ("normal", "opacity") and row["sop_instance_uid"]
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        expected_class = "opacity" if row["probabilities"]["opacity"] >= 0.5 else "normal"
        assert row["predicted"] == expected_class  # no saved threshold: 0.5
    series = [row for row in rows if row["file"].startswith("ct_series_3slice/")]
    assert {row["series_files"] for row in series} == {3}
    assert len({json.dumps(row["probabilities"]) for row in series}) == 1
    assert "training modality" in err and "unknown" in err  # model.pt records none
    phi = _phi_values(DICOM_DIR)
    assert "Dog^AVeryGood" in phi  # the check below looks for real values
    text = _without_uids(document) + err
    assert not [value for value in phi if value in text]


def test_unreadable_files_are_rows_with_reasons(tmp_path, site, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = site / "img_00000.dcm"
    shutil.copy(good, folder / "good.dcm")
    (folder / "cut.dcm").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (folder / "noise.dcm").write_bytes(b"not a dicom file at all" * 10)
    run = _save(_config(tmp_path), threshold=0.5)

    code, out, err = _run(["predict", str(run), str(folder)], capsys)

    assert code == 0, err
    rows = {row["file"]: row for row in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {"good.dcm", "cut.dcm", "noise.dcm"}
    assert rows["good.dcm"]["error"] == "" and rows["good.dcm"]["predicted"]
    assert "truncated" in rows["cut.dcm"]["error"] and rows["cut.dcm"]["predicted"] == ""
    assert rows["noise.dcm"]["error"] == "not a DICOM file"
    assert "1 scored, 2 unreadable" in err and "Traceback" not in err


def test_csv_on_a_synthetic_site_applies_the_saved_threshold(tmp_path, site, capsys):
    run = _save(_config(tmp_path), threshold=0.0)

    code, out, err = _run(["predict", str(run / MODEL_FILE), str(site)], capsys)

    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == [
        "file",
        "sop_instance_uid",
        "series_instance_uid",
        "frame",
        "series_files",
        "predicted",
        "p_normal",
        "p_opacity",
        "error",
    ]
    images = [row for row in rows if row["file"].endswith(".dcm")]
    assert len(images) == 12 and all(row["predicted"] == "opacity" for row in images)
    assert [row["error"] for row in rows if row not in images] == ["not an image (.csv side file)"]
    assert "opacity if p(opacity) >= 0, else normal" in err
    assert not [value for value in _phi_values(site) if value in out + err]


def test_threshold_between_scores_splits_the_classes(tmp_path, site, capsys):
    run = _save(_config(tmp_path), threshold=None)
    first, _ = _json(["predict", str(run), str(site)], capsys)
    scores = sorted(r["probabilities"]["opacity"] for r in first["predictions"] if not r["error"])
    cut = (scores[5] + scores[6]) / 2
    run = _save(_config(tmp_path), threshold=cut)  # as roc saves the chosen threshold

    saved_cut, _ = _json(["predict", str(run), str(site)], capsys)
    override, _ = _json(["predict", str(run), str(site), "--threshold", "1"], capsys)

    assert saved_cut["model"]["threshold"] == pytest.approx(cut)
    predicted = [r for r in saved_cut["predictions"] if not r["error"]]
    assert sum(r["predicted"] == "opacity" for r in predicted) == 6
    for row in predicted:
        assert (row["predicted"] == "opacity") == (row["probabilities"]["opacity"] >= cut)
    assert all(r["predicted"] == "normal" for r in override["predictions"] if not r["error"])


# scatter-linear has no convolution (regression: its --explain ended in a traceback)
@pytest.mark.parametrize("model_name", ["small-cnn", "scatter-linear"])
def test_explain_writes_one_overlay_per_image(tmp_path, site, capsys, model_name):
    run = _save(_config(tmp_path, **{"model.name": model_name}), threshold=0.5)
    explain = tmp_path / "cam"

    code, out, err = _run(
        ["predict", str(run), str(site / "img_00003.dcm"), "--explain", str(explain)], capsys
    )

    assert code == 0, err
    (row,) = csv.DictReader(io.StringIO(out))
    (png,) = explain.iterdir()
    assert row["explanation"] == str(png) and row["sop_instance_uid"] in png.name
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_batchnorm_model_trained_without_dp_predicts_and_explains(tmp_path, site, capsys):
    """cnn-medium-bn is refused for DP training; its saved model is still usable (regression:
    loading it checked the saved settings against the DP-only rule and refused it)."""
    config = _config(tmp_path, **{"model.name": "cnn-medium-bn", "privacy.enabled": False})
    run = _save(config, threshold=0.5)
    explain = tmp_path / "cam"

    code, out, err = _run(
        ["predict", str(run), str(site / "img_00003.dcm"), "--explain", str(explain)], capsys
    )

    assert code == 0, err
    (row,) = csv.DictReader(io.StringIO(out))
    probabilities = [float(value) for key, value in row.items() if key.startswith("p_")]
    assert len(probabilities) == 2 and abs(sum(probabilities) - 1) < 1e-3
    assert len(list(explain.iterdir())) == 1


def test_old_model_file_falls_back_to_defaults(tmp_path, site, capsys):
    model = build_model(MedfedConfig().model, 1)
    old = {
        "state_dict": model.state_dict(),
        "model": "small-cnn",
        "num_classes": 2,
        "in_channels": 1,
        "image_size": 32,
        "round": 2,
    }
    torch.save(old, tmp_path / MODEL_FILE)

    saved = load_saved_model(tmp_path / MODEL_FILE)
    code, out, err = _run(["predict", str(tmp_path), str(site / "img_00001.dcm")], capsys)

    assert saved.defaulted and saved.threshold is None and saved.data.image_size == 32
    assert code == 0 and "older medfed" in err and "using the defaults" in err
    assert len(list(csv.DictReader(io.StringIO(out)))) == 1


def test_warns_once_per_kind_of_mismatch(tmp_path, site, capsys):
    config = _config(tmp_path)
    model = build_model(config.model, 1)
    data = {**data_settings(config), "modalities": ["DX"], "photometric": ["MONOCHROME1"]}
    payload = {
        "state_dict": model.state_dict(),
        "model": "small-cnn",
        "num_classes": 2,
        "in_channels": 1,
        "image_size": 32,
        "round": 1,
        "threshold": 0.5,
        "data": {**data, "sizes": ["48x48"]},
    }
    torch.save(payload, tmp_path / MODEL_FILE)

    code, _, err = _run(["predict", str(tmp_path), str(site)], capsys)

    warnings = [line for line in err.splitlines() if line.startswith("medfed: warning:")]
    assert code == 0
    assert len([w for w in warnings if "modality" in w]) == 1
    assert "12 input(s) with a modality the model was not trained on (CR x12" in err
    assert len([w for w in warnings if "photometric" in w]) == 1  # hospital-a is MONOCHROME2
    assert not [w for w in warnings if "size" in w]  # 48x48 as recorded
    assert "unknown" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "{tmp}/nothing", "{site}"], "no such model file"),
        (["predict", "{run}", "{tmp}/missing"], "no such file or folder"),
        (["predict", "{run}", "{site}", "--threshold", "1.5"], "must be a probability"),
        (["predict", "{site}/labels.csv", "{site}"], "not a readable medfed model file"),
    ],
)
def test_unusable_input_is_one_line_and_exit_2(tmp_path, site, capsys, argv, message):
    run = _save(_config(tmp_path), threshold=None)
    values = {"tmp": tmp_path, "site": site, "run": run}

    code, out, err = _run([part.format(**values) for part in argv], capsys)

    assert code == 2 and out == ""
    assert err.startswith("medfed: error: ") and message in err and err.count("\n") == 1


def test_nothing_scorable_exits_1(tmp_path, capsys):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"junk")
    run = _save(_config(tmp_path), threshold=None)

    code, out, _ = _run(["predict", str(run), str(folder)], capsys)

    assert code == 1 and "a.dcm" in out and "not a DICOM file" in out


def test_frames_all_gives_one_row_per_frame_and_slice(tmp_path, capsys):
    run = _save(_config(tmp_path, **{"data.frames": "all"}), threshold=None)

    cine, _ = _json(["predict", str(run), str(DICOM_DIR / "mr_enhanced_10frame_rle.dcm")], capsys)
    series, _ = _json(["predict", str(run), str(DICOM_DIR / "ct_series_3slice")], capsys)

    assert sorted(row["frame"] for row in cine["predictions"]) == list(range(10))
    assert {row["file"] for row in cine["predictions"]} == {"mr_enhanced_10frame_rle.dcm"}
    assert [row["file"] for row in series["predictions"]] == ["01.dcm", "02.dcm", "03.dcm"]
    assert len({row["sop_instance_uid"] for row in series["predictions"]}) == 3
    assert len({json.dumps(row["probabilities"]) for row in series["predictions"]}) == 3


def test_multi_class_model_predicts_the_arg_max(tmp_path, site, capsys):
    config = _config(tmp_path, **{"data.class-names": "clear,nodule,mass", "model.num-classes": 3})
    run = _save(config, threshold=None)

    code, out, err = _run(["predict", str(run), str(site), "--threshold", "0.1"], capsys)

    assert code == 0, err
    rows = [row for row in csv.DictReader(io.StringIO(out)) if not row["error"]]
    assert len(rows) == 12 and {"p_clear", "p_nodule", "p_mass"} <= set(rows[0])
    for row in rows:
        probabilities = {name: float(row[f"p_{name}"]) for name in ("clear", "nodule", "mass")}
        assert row["predicted"] == max(probabilities, key=probabilities.get)
    assert "--threshold ignored" in err and "arg-max of the class probabilities" in err
