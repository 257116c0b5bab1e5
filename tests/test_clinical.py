"""Clinical variables for fusion models: reading, site-fitted encoding, layout, site check, DP."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch
from flwr.app import MessageType
from opacus.validators import ModuleValidator
from pydicom.dataset import Dataset
from torch.utils.data import TensorDataset

from client.train import plan_round, train_locally
from common import keys
from common.clinical_columns import MISSING_CATEGORY, parse_clinical_columns
from common.config import MedfedConfig
from common.data.cache import INDEX
from common.data.clinical import ClinicalEncoder, encode_splits, parse_number
from common.data.groups import patient_age, patient_sex
from common.data.sites import load_site
from common.data.synthetic import generate_site
from common.errors import ConfigError
from common.model_file import load_saved_model
from common.models import build_run_model
from medfed.cli import main
from simulations.scenario import load_scenario
from tests.clientapp_harness import CapturingHarness

COLUMNS = "age, sex, smoker=never|former|current, bmi"


@pytest.fixture(scope="module")
def clinical_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clinical") / "hospital-a"
    return generate_site(root, 0, seed=0, num_images=40, image_size=32, clinical=True)


def _rows(site: Path) -> list[dict[str, str]]:
    with open(site / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _header(**tags: str) -> Dataset:
    ds = Dataset()
    for name, value in tags.items():
        setattr(ds, name, value)
    return ds


# -- reading ------------------------------------------------------------------------------
def test_patient_age_and_sex_come_from_the_header() -> None:
    assert patient_age(_header(PatientAge="045Y")) == 45
    assert patient_age(_header(PatientAge="006M")) == pytest.approx(0.5)
    born = _header(PatientBirthDate="19600101", StudyDate="20200101")
    assert patient_age(born) == pytest.approx(60, abs=0.01)
    assert patient_age(_header(PatientAge="old")) is None
    assert patient_age(_header()) is None
    assert (patient_sex(_header(PatientSex="f")), patient_sex(_header(PatientSex="X"))) == ("F", "")


def test_numbers_and_missing_values_parse_explicitly() -> None:
    assert parse_number("67.5", "bmi") == 67.5
    assert parse_number("045Y", "age") == 45  # an age column may hold DICOM age strings
    for missing in ("", "  ", None, "n/a", "045Y", "inf"):
        assert math.isnan(parse_number(missing, "bmi"))


def test_labels_csv_columns_are_read_per_image_and_win_over_the_header(
    clinical_site: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    rows = _rows(clinical_site)[:6]
    for row in rows:
        (site / row["path"]).write_bytes((clinical_site / row["path"]).read_bytes())
    with open(site / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "bmi", "age"])
        for i, row in enumerate(rows):
            writer.writerow(
                [row["path"], row["label"], "train", "" if i % 2 else "22.5", "" if i else "33"]
            )
    config = MedfedConfig().replace(**{"data.image-size": 16, "data.cache": False}).data

    data = load_site(site, config, "site")

    records = data.train_clinical
    assert len(records) == len(data.train_y) == 6
    assert records[0]["age"] == "33"  # the csv value wins
    assert [r["bmi"] for r in records] == ["22.5", "", "22.5", "", "22.5", ""]
    assert all(r.get("sex") in {"F", "M"} for r in records)  # from PatientSex


def test_header_facts_cached_before_clinical_fields_are_read_again(
    clinical_site: Path, tmp_path: Path
) -> None:
    config = MedfedConfig().replace(**{"data.image-size": 16, "data.cache-dir": str(tmp_path)}).data
    first = load_site(clinical_site, config, "site")
    for index in tmp_path.rglob(INDEX):  # an index written before clinical facts existed
        stored = json.loads(index.read_text())
        for entry in stored["files"].values():
            entry.pop("sex", None), entry.pop("age_years", None)
        index.write_text(json.dumps(stored))

    again = load_site(clinical_site, config, "site")

    assert again.train_clinical == first.train_clinical
    assert any("age" in record for record in again.train_clinical)


# -- configuration ------------------------------------------------------------------------
def test_the_columns_setting_is_parsed_and_checked() -> None:
    columns = parse_clinical_columns(COLUMNS)
    assert [c.name for c in columns.columns] == ["age", "sex", "smoker", "bmi"]
    assert columns.width == 2 + 4 + 4 + 2 == len(columns.feature_names())
    for bad, why in [
        ("age=young|old", "numeric"),
        ("sex=male|female", "F|M|O"),
        ("bmi, bmi", "twice"),
        ("smoker=", "no categories"),
        ("label", "labels.csv column"),
        ("a b", "not a column name"),
    ]:
        with pytest.raises(ConfigError, match=rf"'data\.clinical-columns'.*{re.escape(why)}"):
            MedfedConfig.from_flat({"data.clinical-columns": bad, "model.name": "fusion-cnn"})


def test_fusion_and_clinical_columns_go_together() -> None:
    with pytest.raises(ConfigError, match=r"'model\.name' = 'fusion-cnn': needs data\.clinical"):
        MedfedConfig.from_flat({"model.name": "fusion-cnn"})
    with pytest.raises(ConfigError, match=r"'data\.clinical-columns'.*only fusion models"):
        MedfedConfig.from_flat({"data.clinical-columns": "age"})


# -- encoding -----------------------------------------------------------------------------
TRAIN = [
    {"age": "50", "sex": "F", "bmi": "20"},
    {"age": "70", "sex": "M", "bmi": ""},
    {"age": "", "sex": "", "bmi": "30"},
    {"age": "90", "sex": "M", "bmi": "25"},
]


def test_imputation_and_scaling_are_fitted_on_the_training_split_only() -> None:
    val_a = [{"age": "", "bmi": ""}]
    val_b = [{"age": "1000", "bmi": "5"}]
    test_b = [{"age": "-3", "bmi": "99"}] * 5

    a = encode_splits(TRAIN, val_a, val_a, columns_text="age,bmi")
    b = encode_splits(TRAIN, val_b, test_b, columns_text="age,bmi")

    assert torch.equal(a.train, b.train)  # other splits never move the fitted statistics
    median_age = encode_splits(TRAIN, [{"age": "70", "bmi": "25"}], [], columns_text="age,bmi")
    # layout: age, bmi (standardised), age:missing, bmi:missing
    assert a.val[0, :2].tolist() == pytest.approx(median_age.val[0, :2].tolist())
    assert a.val[0, 2:].tolist() == [1.0, 1.0] and median_age.val[0, 2:].tolist() == [0.0, 0.0]
    assert a.train[:, 0].mean().item() == pytest.approx(0.0, abs=1e-6)  # standardised on train


def test_every_site_produces_the_same_layout_whatever_its_categories() -> None:
    columns = parse_clinical_columns("sex, smoker=never|former|current, bmi")
    site_a = [{"smoker": "never", "sex": "F"}, {"smoker": "Current", "sex": "M", "bmi": "21"}]
    site_b = [{"smoker": "ex-smoker", "sex": "female"}, {"smoker": "", "bmi": "x"}]
    site_c: list[dict[str, str]] = [{}, {}, {}]  # a site with no clinical data at all

    encoded = [ClinicalEncoder(columns).fit(s).transform(s) for s in (site_a, site_b, site_c)]

    assert {tuple(e.shape[1:]) for e in encoded} == {(columns.width,)}
    names = columns.feature_names()
    slot = names.index(f"smoker={MISSING_CATEGORY}")
    assert encoded[0][:, names.index("smoker=current")].tolist() == [0.0, 1.0]  # case-insensitive
    assert encoded[1][:, slot].tolist() == [1.0, 1.0]  # unknown and missing share the slot
    assert encoded[1][0, names.index("sex=F")] == 1.0  # "female" is F
    assert encoded[2][:, names.index("bmi:missing")].tolist() == [1.0, 1.0, 1.0]


# -- site check ---------------------------------------------------------------------------
def test_site_check_reports_columns_and_missing_shares_but_never_values(
    clinical_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["site", "check", str(clinical_site), "--no-cache", "--clinical-columns"]
    assert main([*args, "age,sex,smoker=never|former,weight", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main([*args, "age,sex,smoker=never|former,weight"]) == 0
    text = capsys.readouterr().out

    found = {column["name"]: column for column in report["clinical"]}
    assert set(found) == {"age", "sex", "smoker", "bmi"}
    assert (found["age"]["type"], found["bmi"]["type"]) == ("numeric", "numeric")
    assert (found["sex"]["type"], found["smoker"]["type"]) == ("categorical", "categorical")
    rows = _rows(clinical_site)
    missing_bmi = sum(1 for row in rows if not row["bmi"])
    assert found["bmi"]["missing"] == missing_bmi and found["bmi"]["images"] == 40
    assert found["bmi"]["missing_share"] == pytest.approx(missing_bmi / 40, abs=1e-4)
    assert found["smoker"]["distinct_values"] == 3
    assert any("'weight' has no values" in w for w in report["warnings"])
    assert any("'smoker'" in w and "outside the declared" in w for w in report["warnings"])
    for output in (json.dumps(report), text):
        assert "Clinical" in text and "smoker" in output
        for row in rows:
            assert not row["bmi"] or row["bmi"] not in output
        assert "current" not in output and "never" not in output.replace("never leave", "")


# -- the model ----------------------------------------------------------------------------
def _fusion_config(**extra: object) -> MedfedConfig:
    return MedfedConfig.from_flat(
        {"model.name": "fusion-cnn", "data.clinical-columns": COLUMNS, **extra}
    )


def test_the_fusion_model_trains_under_dp_sgd() -> None:
    config = _fusion_config(
        **{"train.batch-size": 8, "privacy.noise-multiplier": 1.0, "privacy.accountant": "rdp"}
    )
    width = parse_clinical_columns(COLUMNS).width
    model = build_run_model(config, 1)
    assert ModuleValidator.validate(model, strict=False) == []
    torch.manual_seed(0)
    dataset = TensorDataset(
        torch.rand(32, 1, 16, 16), torch.randn(32, width), torch.randint(0, 2, (32,))
    )
    before = [p.detach().clone() for p in model.parameters()]
    plan = plan_round(len(dataset), config.train, config.privacy, planned_rounds=3)

    result = train_locally(model, dataset, config.train, config.privacy, plan=plan)

    assert result.epsilon is not None and 0 < result.epsilon < math.inf
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_fusion_round_runs_through_the_client_app(clinical_site: Path, tmp_path: Path) -> None:
    config = _fusion_config(
        **{
            "data.image-size": 16,
            "data.cache-dir": str(tmp_path / "cache"),
            "data.synthetic-root": str(tmp_path / "synthetic"),
            "train.batch-size": 8,
            "privacy.noise-multiplier": 1.0,
            "privacy.accountant": "rdp",
        }
    )
    harness = CapturingHarness(clinical_site, config)

    trained = harness.send(MessageType.TRAIN).content[keys.METRICS]
    evaluated = harness.send(MessageType.EVALUATE).content[keys.METRICS]

    assert trained[keys.NUM_EXAMPLES] > 0 and trained[keys.EPSILON] > 0
    assert 0.0 <= evaluated[keys.EVAL_AUC] <= 1.0 or math.isnan(evaluated[keys.EVAL_AUC])


def test_predict_refuses_a_fusion_model_file_in_one_line(tmp_path: Path) -> None:
    config = _fusion_config()
    path = tmp_path / "model.pt"
    torch.save(
        {
            "state_dict": build_run_model(config, 1).state_dict(),
            "model": "fusion-cnn",
            "num_classes": 2,
            "in_channels": 1,
            "image_size": 64,
        },
        path,
    )
    with pytest.raises(ConfigError, match="clinical variables; predict and grad-cam take image"):
        load_saved_model(path)


@pytest.mark.slow
def test_fusion_beats_image_only_on_the_synthetic_clinical_task(tmp_path: Path) -> None:
    from simulations.fusion_task import FusionTask, compare

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as benchmarks/fusion.py: the same numbers, seed for seed
    try:
        auc = compare(tmp_path, FusionTask(seed=0))
    finally:
        torch.set_num_threads(threads)

    # image-only cannot tell a young patient's lesion from an old one's (ceiling ~0.73)
    assert auc["fusion"] > 0.85
    assert auc["fusion"] > auc["image-only"] + 0.08


def test_the_synthetic_clinical_task_needs_age_and_ships_as_a_scenario(
    clinical_site: Path,
) -> None:
    config = MedfedConfig().replace(**{"data.image-size": 16, "data.cache": False}).data
    data = load_site(clinical_site, config, "site")
    records = data.train_clinical + data.test_clinical
    labels = torch.cat([data.train_y, data.test_y]).tolist()
    young = [
        y for r, y in zip(records, labels, strict=True) if r.get("age") and float(r["age"]) < 60
    ]
    assert young and sum(young) <= 2  # only label noise makes a young patient positive
    assert any(labels)

    scenario = load_scenario("fusion").config()

    assert scenario.model.name == "fusion-cnn" and scenario.data.synthetic_kind == "clinical"
    assert parse_clinical_columns(scenario.data.clinical_columns).width == 12
