"""The per-site tensor cache and SiteStore: decode once, invalidate on content or config change."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import cloudpickle
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from client.app import build_client_app, handle_evaluate
from client.site import SiteSources
from common import keys
from common.config import DataConfig, MedfedConfig
from common.data.ingest import ingest_site
from common.data.sites import SiteStore, load_site
from common.data.synthetic import generate_site
from common.models import build_model
from common.params import model_to_arrays
from common.round_settings import encode_round_settings
from tests.messy_site import build_messy_site
from tests.shared_data import dicom_file

CONFIG = DataConfig(image_size=32)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return generate_site(tmp_path / "hospital-a", 0, seed=0, num_images=12, image_size=48)


def test_second_load_reads_only_the_cache_and_gives_identical_tensors(site: Path) -> None:
    first = ingest_site(site, CONFIG, "hospital-a")
    second = ingest_site(site, CONFIG, "hospital-a")

    assert (first.decoded, first.from_cache) == (12, 0)
    assert (second.decoded, second.from_cache) == (0, 12)
    for split in ("train", "test"):
        assert torch.equal(torch.stack(first.images[split]), torch.stack(second.images[split]))
        assert first.labels[split] == second.labels[split]
    assert (site / ".medfed-cache").is_dir()


def test_changed_file_content_is_decoded_again(site: Path) -> None:
    ingest_site(site, CONFIG, "hospital-a")
    changed = site / "img_00003.dcm"
    shutil.copy(site / "img_00004.dcm", changed)
    os.utime(changed, ns=(1, 1))  # a new mtime forces rehashing

    again = ingest_site(site, CONFIG, "hospital-a")

    assert again.decoded == 0  # content equals a cached file ...
    reasons = {s.path.name: s.reason for s in again.skipped}  # ... and is reported as a copy
    assert "img_00004.dcm" in reasons["img_00003.dcm"]
    shutil.copy(dicom_file("dx_thorax_small_mono1_canine.dcm"), changed)
    # img_00003 (new content) and img_00004: the copy had another label, so both were skipped
    # as a conflict and img_00004's cached tensors were dropped as unused
    assert ingest_site(site, CONFIG, "hospital-a").decoded == 2


def test_changed_preprocessing_config_uses_a_fresh_cache_entry(site: Path) -> None:
    ingest_site(site, CONFIG, "hospital-a")

    resized = ingest_site(site, DataConfig(image_size=24), "hospital-a")
    back = ingest_site(site, CONFIG, "hospital-a")

    assert resized.decoded == 12
    assert torch.stack(resized.images["train"]).shape[-1] == 24
    assert back.decoded == 0


def test_bad_files_are_remembered_too_and_cache_can_be_disabled(tmp_path: Path) -> None:
    messy = build_messy_site(tmp_path / "messy")
    first = ingest_site(messy, CONFIG, "messy")

    second = ingest_site(messy, CONFIG, "messy")
    uncached = ingest_site(
        messy, DataConfig(image_size=32, cache=False, cache_dir=str(tmp_path / "x")), "messy"
    )

    assert second.decoded == 0
    assert [s.reason for s in second.skipped] == [s.reason for s in first.skipped]
    assert uncached.decoded == first.decoded
    assert not (tmp_path / "x").exists()


def test_a_shared_cache_folder_keeps_read_only_sites_untouched(site: Path, tmp_path: Path) -> None:
    config = DataConfig(image_size=32, cache_dir=str(tmp_path / "cache"))

    load_site(site, config, "hospital-a")

    assert not (site / ".medfed-cache").exists()
    assert len(list((tmp_path / "cache").glob("hospital-a-*"))) == 1


def test_site_store_loads_once_per_process_and_is_bounded(site: Path, tmp_path: Path) -> None:
    other = generate_site(tmp_path / "hospital-b", 1, seed=0, num_images=8, image_size=48)
    store = SiteStore(capacity=1)

    first = store.get(site, CONFIG, "hospital-a")
    again = store.get(site, CONFIG, "hospital-a")
    store.get(other, CONFIG, "hospital-b")
    store.get(site, CONFIG, "hospital-a")

    assert again is first
    assert store.loads == 3  # hospital-a evicted by hospital-b (capacity 1), then reloaded


def test_client_handlers_reuse_the_loaded_site_across_rounds(site: Path) -> None:
    config = MedfedConfig().replace(**{"data.image-size": 32})
    model = build_model(config.model, 1)
    context = Context(
        run_id=1,
        node_id=1,
        node_config={keys.NODE_DATA_PATH: str(site), keys.NODE_SITE_ID: "hospital-a"},
        state=RecordDict(),
        run_config={},
    )
    sources = SiteSources.create()

    for server_round in (1, 2, 3):
        content = RecordDict(
            {
                keys.ARRAYS: model_to_arrays(model),
                keys.CONFIG: ConfigRecord(
                    {**encode_round_settings(config, "cache"), keys.SERVER_ROUND: server_round}
                ),
            }
        )
        reply = handle_evaluate(content, context, sources)
        assert reply[keys.METRICS][keys.NUM_EXAMPLES] > 0

    assert sources.store.loads == 1


def test_the_client_app_and_its_site_store_pickle_for_simulation_workers(site: Path) -> None:
    store = SiteStore(progress=True)
    store.get(site, CONFIG, "hospital-a")

    copy = pickle.loads(pickle.dumps(store))
    app = cloudpickle.loads(cloudpickle.dumps(build_client_app()))

    assert copy.loads == 0 and copy.get(site, CONFIG, "hospital-a").site_id == "hospital-a"
    assert app is not None
