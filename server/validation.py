"""Checks every site's training reply must pass before it may be aggregated.

A reply is rejected (with a one-line reason) when it
- does not carry exactly one ArrayRecord and one MetricRecord, or sends metrics outside the
  allow-list (``common.keys.TRAIN_METRICS_ALLOWED``);
- reports a ``num-examples`` that is not a positive integer up to ``max_examples``;
- has different array names, count, shapes or dtypes than the global model it was sent;
- contains NaN or infinite values;
- moves the model (its *update*, reply minus global model) more than ``norm_multiple``
  times the round's median update norm (needs three or more replies to mean anything);
- optionally, points away from the other sites: cosine similarity to the coordinate-wise
  median update below ``min_cosine`` (off at the default -1).

The functions here are pure: they take reply contents and the global arrays and return which
replies pass and why the others do not. ``server.guarded`` applies them each round.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from common import keys
from common.config import ValidationConfig


@dataclass(frozen=True)
class Candidate:
    """One site's training reply, named for logging."""

    site: str
    content: RecordDict


@dataclass(frozen=True)
class Verdict:
    """Outcome for a round: accepted candidates (input order) and rejection reasons."""

    accepted: list[Candidate]
    rejected: dict[str, str]


def _metric_problem(content: RecordDict, max_examples: int) -> str | None:
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return "reply must carry exactly one ArrayRecord and one MetricRecord"
    metrics = next(iter(content.metric_records.values()))
    extra = sorted(set(metrics) - keys.TRAIN_METRICS_ALLOWED)
    if extra:
        return f"metrics outside the allow-list: {', '.join(extra)}"
    examples = metrics.get(keys.NUM_EXAMPLES)
    if isinstance(examples, bool) or not isinstance(examples, int | float):
        return f"'{keys.NUM_EXAMPLES}' missing or not a number"
    if not float(examples).is_integer() or not 0 < examples <= max_examples:
        return f"implausible {keys.NUM_EXAMPLES} {examples!r} (expected 1..{max_examples})"
    return None


def _array_problem(arrays: ArrayRecord, reference: Mapping[str, np.ndarray]) -> str | None:
    if set(arrays) != set(reference):
        missing = sorted(set(reference) - set(arrays))
        unexpected = sorted(set(arrays) - set(reference))
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            )
            if part
        )
        return f"has {len(arrays)} arrays, expected {len(reference)} ({detail})"
    for name, expected in reference.items():
        try:
            value = arrays[name].numpy()
        except Exception:  # a corrupt Array cannot be decoded: reject, never crash the round
            return f"array '{name}' cannot be decoded"
        if value.shape != expected.shape:
            return f"array '{name}' has shape {tuple(value.shape)}, expected {expected.shape}"
        if value.dtype != expected.dtype:
            return f"array '{name}' has dtype {value.dtype}, expected {expected.dtype}"
        if not np.all(np.isfinite(value)):
            return f"array '{name}' has non-finite values (NaN or inf)"
    return None


def flat_update(arrays: ArrayRecord, reference: Mapping[str, np.ndarray]) -> np.ndarray:
    """The update (reply minus global model) of all arrays as one float64 vector."""
    return np.concatenate(
        [
            (arrays[name].numpy().astype(np.float64) - expected.astype(np.float64)).ravel()
            for name, expected in sorted(reference.items())
        ]
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else 1.0


def validate_round(
    candidates: Sequence[Candidate],
    reference: Mapping[str, np.ndarray],
    policy: ValidationConfig,
) -> Verdict:
    """Check one round's replies against the global model ``reference`` and each other."""
    if not policy.enabled:
        return Verdict(list(candidates), {})
    rejected: dict[str, str] = {}
    passed: list[Candidate] = []
    for candidate in candidates:
        problem = _metric_problem(candidate.content, policy.max_examples)
        if problem is None:
            arrays = next(iter(candidate.content.array_records.values()))
            problem = _array_problem(arrays, reference)
        if problem is None:
            passed.append(candidate)
        else:
            rejected[candidate.site] = problem
    passed = _same_metric_keys(passed, rejected)
    if not passed:
        return Verdict([], rejected)

    updates = [flat_update(next(iter(c.content.array_records.values())), reference) for c in passed]
    norms = np.array([np.linalg.norm(u) for u in updates])
    median_norm = float(np.median(norms))
    limit = policy.norm_multiple * median_norm
    keep: list[int] = []
    for index, norm in enumerate(norms):
        if len(passed) >= 3 and norm > limit:
            rejected[passed[index].site] = (
                f"update norm {norm:.3g} exceeds {policy.norm_multiple:g} x the round's "
                f"median {median_norm:.3g}"
            )
        else:
            keep.append(index)
    if policy.min_cosine > -1.0 and len(keep) >= 3:
        median_update = np.median(np.stack([updates[i] for i in keep]), axis=0)
        still: list[int] = []
        for index in keep:
            cosine = _cosine(updates[index], median_update)
            if cosine < policy.min_cosine:
                rejected[passed[index].site] = (
                    f"update direction disagrees with the other sites (cosine {cosine:.2f} "
                    f"to the median update, minimum {policy.min_cosine:g})"
                )
            else:
                still.append(index)
        keep = still
    return Verdict([passed[i] for i in keep], rejected)


def _same_metric_keys(passed: list[Candidate], rejected: dict[str, str]) -> list[Candidate]:
    """Keep replies whose metric names match the most common set (Flower requires it)."""
    if not passed:
        return passed
    key_sets = [frozenset(next(iter(c.content.metric_records.values())).keys()) for c in passed]
    usual, _ = Counter(key_sets).most_common(1)[0]
    kept = []
    for candidate, key_set in zip(passed, key_sets, strict=True):
        if key_set == usual:
            kept.append(candidate)
        else:
            rejected[candidate.site] = (
                f"metric names differ from the other sites ({', '.join(sorted(key_set))})"
            )
    return kept
