"""Sequence models (seq-gru, seq-lstm): DP-SGD per study, config pairing, real stacks."""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from opacus.grad_sample import wrap_model
from torch.utils.data import TensorDataset

from client.evaluate import evaluate_model
from client.train import plan_round, prepare_training, run_steps, train_locally
from common.config import MedfedConfig, ModelConfig, PrivacyConfig, TrainConfig
from common.data.sites import load_site
from common.data.synthetic import ensure_configured_site, site_style
from common.data.synthetic_series import synthesize_series
from common.errors import ConfigError
from common.gradcam import grad_cam
from common.models import build_model
from medfed.cli import main
from server.rundir import RunDirectory
from tests.shared_data import DICOM_DIR, dicom_file


def _stacks(count: int, frames: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, frames, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["seq-gru", "seq-lstm"])
def test_opacus_per_sample_gradients_are_per_study_not_per_frame(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), in_channels=1)
    images, labels = _stacks(4), torch.tensor([0, 1, 1, 0])
    expected = []
    for i in range(4):  # one study at a time: its true gradient
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images[i : i + 1]), labels[i : i + 1])
        loss.backward()
        expected.append({n: p.grad.clone() for n, p in model.named_parameters()})
    wrapped_model = copy.deepcopy(model)

    wrapped = wrap_model(wrapped_model, grad_sample_mode="hooks", loss_reduction="sum")
    torch.nn.functional.cross_entropy(wrapped(images), labels, reduction="sum").backward()

    for param_name, param in wrapped_model.named_parameters():
        assert param.grad_sample.shape[0] == 4  # one per study (not 4 x 3 frames)
        for i in range(4):
            torch.testing.assert_close(
                param.grad_sample[i], expected[i][param_name], atol=1e-5, rtol=1e-4
            )


@pytest.mark.parametrize("name", ["seq-gru", "seq-lstm"])
def test_sequence_model_trains_under_dp_sgd(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), in_channels=1)
    dataset = TensorDataset(_stacks(16, frames=2, size=8), torch.arange(16) % 2)
    train = TrainConfig(batch_size=8, learning_rate=0.05)
    privacy = PrivacyConfig(noise_multiplier=1.0, accountant="rdp")
    plan = plan_round(len(dataset), train, privacy, planned_rounds=1)
    fresh = copy.deepcopy(model)
    before = copy.deepcopy(model.state_dict())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_training(fresh, dataset, train, privacy, plan=plan)
        loss = run_steps(prepared, steps=3)
        grad_samples = [p.grad_sample for p in prepared.model.parameters()]
        result = train_locally(model, dataset, train, privacy, plan=plan)

    assert np.isfinite(loss) and np.isfinite(result.train_loss)
    assert all(g is not None for g in grad_samples)  # Opacus clipped per sample
    assert result.epsilon is not None and result.epsilon > 0
    changed = [not torch.equal(before[k], v) for k, v in model.state_dict().items()]
    assert any(changed)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.name": "seq-gru"}, r"'model.name' = 'seq-gru': is a sequence model"),
        ({"data.frames": "stack"}, r"'data.frames' = 'stack': needs a sequence model"),
        (
            {"model.name": "seq-lstm", "data.frames": "stack", "privacy.grad-sample-mode": "ghost"},
            r"'privacy.grad-sample-mode' = 'ghost': seq-lstm needs one of auto, hooks",
        ),
    ],
)
def test_config_refuses_a_model_that_does_not_fit_the_frames(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        MedfedConfig.from_flat(overrides)


def test_config_accepts_a_sequence_model_on_stacks() -> None:
    config = MedfedConfig.from_flat({"model.name": "seq-gru", "data.frames": "stack"})

    assert config.model.name == "seq-gru"


def test_real_multiframe_and_series_files_become_stacks_a_sequence_model_reads(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    shutil.copytree(DICOM_DIR / "ct_series_3slice", site / "normal" / "series")
    for name in ("mr_enhanced_10frame_rle.dcm", "ct_enhanced_2frame_rle.dcm"):
        shutil.copy(dicom_file(name), site / "normal" / name)
    (site / "opacity").mkdir()
    for name in ("us_multiframe_jpeg_baseline_ybr.dcm", "dx_thorax_small_mono1_canine.dcm"):
        shutil.copy(dicom_file(name), site / "opacity" / name)
    config = MedfedConfig.from_flat(
        {
            "data.frames": "stack",
            "data.stack-depth": 4,
            "data.image-size": 16,
            "data.test-fraction": 0.0,
            "data.cache": False,
            "model.name": "seq-gru",
        }
    )

    data = load_site(site, config.data, "real")
    logits = build_model(config.model, data.in_channels)(data.train_x)

    assert data.train_x.shape == (5, 1, 4, 16, 16)  # 3-slice series, 10, 2, 8 frames, 1 image
    assert sorted(len(s.members) for s in data.samples) == [1, 1, 1, 1, 3]
    assert torch.isfinite(data.train_x).all()
    assert logits.shape == (5, 2) and torch.isfinite(logits).all()
    constant = [all(torch.equal(x[:, 0], x[:, d]) for d in range(4)) for x in data.train_x]
    assert sum(constant) == 1  # only the single image: repeated to the depth


def _series_task(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    style = site_style(0)
    labels = (rng.random(count) < 0.4).astype(int)
    volumes = np.stack([synthesize_series(rng, 10, 16, bool(y), style) for y in labels])
    return torch.from_numpy(volumes).unsqueeze(1), torch.from_numpy(labels)


def _fit_and_score(name: str, train: TensorDataset, test_x: torch.Tensor, test_y: torch.Tensor):
    config = MedfedConfig.from_flat(
        {
            "model.name": name,
            "data.frames": "stack" if name == "seq-gru" else "middle",
            "privacy.enabled": False,
            "train.batch-size": 16,
            "train.learning-rate": 0.02,
            "train.local-epochs": 8,
        }
    )
    torch.manual_seed(0)
    model = build_model(config.model, in_channels=1)
    plan = plan_round(len(train), config.train, config.privacy, planned_rounds=1)
    train_locally(model, train, config.train, config.privacy, plan=plan)
    return evaluate_model(model, test_x, test_y).auc


def test_sequence_model_beats_the_middle_slice_on_the_series_task() -> None:
    torch.set_num_threads(1)
    train_x, train_y = _series_task(210, seed=0)
    test_x, test_y = _series_task(200, seed=1)
    middle = 10 // 2  # the slice frames="middle" takes from a 10-slice series

    sequence_auc = _fit_and_score("seq-gru", TensorDataset(train_x, train_y), test_x, test_y)
    middle_auc = _fit_and_score(
        "small-cnn", TensorDataset(train_x[:, :, middle], train_y), test_x[:, :, middle], test_y
    )

    assert sequence_auc > 0.9
    assert sequence_auc > middle_auc + 0.08


def test_synthetic_series_hospital_is_grouped_into_ordered_stacks(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    flat = {
        "data.synthetic-root": str(root),
        "data.synthetic-kind": "series",
        "data.synthetic-images-per-site": 8,
        "data.synthetic-slices": 6,
        "data.synthetic-image-size": 16,
        "data.image-size": 16,
        "data.class-names": "normal,lesion",
        "data.test-fraction": 0.0,
        "data.cache": False,
        "data.stack-depth": 6,
    }
    config = MedfedConfig.from_flat({**flat, "data.frames": "stack", "model.name": "seq-gru"})

    site = ensure_configured_site(config.data, seed=3, index=0)
    stacks = load_site(site, config.data, "series")
    middle = load_site(
        site, config.data.__class__(**{**vars(config.data), "frames": "middle"}), "m"
    )

    assert site.parent.name.startswith("series-")
    assert stacks.train_x.shape == (8, 1, 6, 16, 16)
    assert [len(s.members) for s in stacks.samples] == [6] * 8  # one sample per series
    for sample in stacks.samples:
        positions = [m.info.slice_position for m in sample.members]
        assert (
            positions == sorted(positions) and len({m.info.series_uid for m in sample.members}) == 1
        )
    assert middle.train_x.shape == (8, 1, 16, 16)
    assert torch.equal(middle.train_x, stacks.train_x[:, :, 3])  # the middle slice of 6
    assert torch.equal(middle.train_y, stacks.train_y)


def test_predict_and_grad_cam_refuse_a_sequence_model_in_one_line(tmp_path: Path, capsys) -> None:
    config = MedfedConfig().replace(
        **{
            "run.run-dir": str(tmp_path / "run"),
            "data.image-size": 16,
            "data.frames": "stack",
            "model.name": "seq-gru",
        }
    )
    run = RunDirectory.create(config)
    model = build_model(config.model, 1)
    run.save_model(ArrayRecord(model.state_dict()), config, 1, threshold=None)

    code = main(["predict", str(run.path), str(dicom_file("dx_thorax_small_mono1_canine.dcm"))])

    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "seq-gru is a sequence model (data.frames=stack)" in err
    with pytest.raises(ValueError, match="Grad-CAM explains 2D models"):
        grad_cam(model, _stacks(2))
