"""Nothing but model parameters and allow-listed scalars leave a site.

The real ClientApp runs in-process behind a capturing mod (the same hook a SuperNode uses);
every reply it sends is inspected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Message

from common import keys
from common.config import ACCOUNTANTS, MedfedConfig
from tests.clientapp_harness import CapturingHarness


def _assert_only_parameters_and_allowed_scalars(
    reply: Message, allowed: frozenset[str], param_shapes: dict[str, tuple[int, ...]]
) -> None:
    content = reply.content
    assert set(content.config_records) <= {keys.ATTESTATION}, "only the ledger attestation"
    for record in content.config_records.values():
        _assert_attestation_is_allow_listed(record)
    for record in content.array_records.values():
        assert set(record.keys()) == set(param_shapes)
        for name, array in record.items():
            assert tuple(array.shape) == param_shapes[name]
    (metrics,) = content.metric_records.values()
    assert set(metrics.keys()) <= allowed
    for value in metrics.values():
        assert isinstance(value, int | float) and not isinstance(value, bool)


def _assert_attestation_is_allow_listed(record: ConfigRecord) -> None:
    """Exactly the allow-listed keys and types; strings only the run key and accountant."""
    assert set(record) == set(keys.ATTESTATION_ALLOWED)
    for name, value in record.items():
        assert type(value) is keys.ATTESTATION_ALLOWED[name], name
    assert record["accountant"] in ACCOUNTANTS
    assert record["run-key"] == "1"  # the harness' run: the key the server sent
    assert [len(record[k]) for k in ("update-sha256", "prev-hash", "signature")] == [32, 32, 64]  # type: ignore[arg-type]


def test_train_and_evaluate_replies_carry_only_allowed_content(
    small_site: Path, small_config: MedfedConfig
) -> None:
    harness = CapturingHarness(small_site, small_config)
    shapes = {k: tuple(v.shape) for k, v in harness.global_model().state_dict().items()}

    harness.train()
    harness.evaluate()

    train_reply, eval_reply = harness.sent
    assert keys.ATTESTATION in train_reply.content.config_records  # DP is on: one is sent
    _assert_only_parameters_and_allowed_scalars(train_reply, keys.TRAIN_METRICS_ALLOWED, shapes)
    _assert_only_parameters_and_allowed_scalars(eval_reply, keys.EVAL_METRICS_ALLOWED, {})
    assert not eval_reply.content.array_records


def test_replies_contain_no_file_names_or_patient_tags(
    small_site: Path, small_config: MedfedConfig
) -> None:
    harness = CapturingHarness(small_site, small_config)

    harness.train()
    harness.evaluate()

    for reply in harness.sent:
        flat = repr(reply.content).encode()
        for record in reply.content.array_records.values():
            flat += b"".join(np.ascontiguousarray(a.numpy()).tobytes() for a in record.values())
        for forbidden in (b"img_00000", b"SYNTHETIC^", b"hospital-a", str(small_site).encode()):
            assert forbidden not in flat
