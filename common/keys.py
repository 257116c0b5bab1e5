"""Names used on the wire between ServerApp and ClientApp, in one place.

The allow-lists are the complete set of scalar metrics a site may send back. Anything else
(strings, arrays other than model parameters, file names, DICOM tags) must never leave a site;
``tests/test_wire_allowlist.py`` checks real replies against these sets.
"""

from __future__ import annotations

import functools
import re

ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"

NUM_EXAMPLES = "num-examples"
SITE_INDEX = "site-index"

# Set by Flower's strategies in the train/evaluate ConfigRecord (not part of MedfedConfig).
SERVER_ROUND = "server-round"
PROXIMAL_MU = "proximal-mu"  # FedProx: weight of the client's proximal term
RUN_KEY = "run-key"  # names the run in a site's privacy state; stable across a resume

TRAIN_LOSS = "train-loss"
EPSILON = "epsilon"
DELTA = "delta"
NOISE_MULTIPLIER = "noise-multiplier"
SAMPLE_RATE = "sample-rate"
# A site's answer to a train request: trained, or declined (it then sends the global model
# back unchanged, 0 examples) because the round would take its spent epsilon past its budget,
# or because the run breaks the site's privacy policy (``client.policy``). The reason itself
# stays at the site: only the status crosses the wire.
TRAIN_STATUS = "train-status"
STATUS_TRAINED = 0
STATUS_DECLINED_BUDGET = 1
STATUS_DECLINED_POLICY = 2
# Not sent by a site: the server's name for a task the site's gate refused (error reply
# ``app not approved at this site: <hash> (site-index N)``), so it is reported as a decline.
STATUS_DECLINED_APP = 3
DECLINED_STATUSES = frozenset({STATUS_DECLINED_BUDGET, STATUS_DECLINED_POLICY, STATUS_DECLINED_APP})
NOT_APPROVED = "app not approved at this site"
_NOT_APPROVED_REASON = re.compile(
    re.escape(NOT_APPROVED) + r": (?P<hash>[0-9a-f]{64}|unknown)(?: \(site-index (?P<index>\d+)\))?"
)


def not_approved_reason(fab_hash: str, site_index: int | None) -> str:
    """The error reason a site's gate answers an unapproved app's task with."""
    where = f" (site-index {site_index})" if site_index is not None else ""
    return f"{NOT_APPROVED}: {fab_hash}{where}"


def parse_not_approved(reason: str) -> tuple[str, int | None] | None:
    """(FAB hash, site index or None) of a gate's refusal, or None for any other reason."""
    found = _NOT_APPROVED_REASON.search(reason)
    if found is None:
        return None
    index = found.group("index")
    return found.group("hash"), int(index) if index is not None else None


# A trained reply also carries the round's signed privacy-ledger record (``common.ledger``) as
# a ConfigRecord named ``attestation``: exactly these keys, each of this type (the only
# non-numeric values a site sends: the run key the server sent it, the accountant's name, and
# the record's hashes and Ed25519 signature). ``server.attestations`` keeps the copies.
ATTESTATION = "attestation"
ATTESTATION_ALLOWED: dict[str, type] = {
    "run-key": str,
    "round": int,
    "sample-rate": float,
    "noise-multiplier": float,
    "steps": int,
    "accountant": str,
    "epsilon": float,
    "delta": float,
    "update-sha256": bytes,
    "prev-hash": bytes,
    "recorded-at": int,
    "signature": bytes,
}

EVAL_LOSS = "eval-loss"
EVAL_ACC = "eval-acc"
EVAL_AUC = "eval-auc"
TRUE_POS = "tp"
FALSE_POS = "fp"
TRUE_NEG = "tn"
FALSE_NEG = "fn"
BINARY_COUNTS = (TRUE_POS, FALSE_POS, TRUE_NEG, FALSE_NEG)
# Multi-class confusion matrices travel cell by cell: ``cm-<true>-<predicted>``.
MAX_CLASSES = 16
_CONFUSION_PREFIX = "cm-"


def confusion_key(true_class: int, predicted: int) -> str:
    """Wire name of one confusion-matrix cell."""
    return f"{_CONFUSION_PREFIX}{true_class}-{predicted}"


def parse_confusion_key(key: str) -> tuple[int, int] | None:
    """(true, predicted) of a ``cm-i-j`` key, or None for any other key."""
    if not key.startswith(_CONFUSION_PREFIX):
        return None
    true_class, _, predicted = key.removeprefix(_CONFUSION_PREFIX).partition("-")
    if not (true_class.isdigit() and predicted.isdigit()):
        return None
    return int(true_class), int(predicted)


CONFUSION_KEYS = frozenset(
    confusion_key(i, j) for i in range(MAX_CLASSES) for j in range(MAX_CLASSES)
)

# Threshold-grid counts (``common.roc``): per scope (a split, or a patient group of the test
# split) and class, TP and FP at each of the GRID cut-offs plus the class sizes; per scope the
# calibration bins. Counts only: never a per-image score.
EVAL_SPLITS = ("val", "test")
GRID = 101
CAL_BINS = 10
# Patient groups a site may report (``common.fairness``), from DICOM tags read at the site.
SEX_GROUPS = ("F", "M", "O")
AGE_BANDS = ("0-17", "18-39", "40-59", "60-79", "80+")
GROUPS = tuple(f"sex={s}" for s in SEX_GROUPS) + tuple(f"age={a}" for a in AGE_BANDS)
GROUP_SPLIT = "test"  # groups are reported on the test split only
SCOPES = EVAL_SPLITS + tuple(f"{GROUP_SPLIT}.{g}" for g in GROUPS)
CURVE_STATS = ("tp", "fp")
CLASS_SIZES = ("pos", "neg")
CAL_STATS = ("n", "pos", "sum")


def curve_key(scope: str, class_index: int, stat: str, cutoff: int | None = None) -> str:
    """Wire name of a grid count (``val-c1-tp-37``) or class size (``val-c1-pos``)."""
    key = f"{scope}-c{class_index}-{stat}"
    return key if cutoff is None else f"{key}-{cutoff}"


def calibration_key(scope: str, stat: str, bin_index: int) -> str:
    """Wire name of a calibration bin count (``test-cal-n-3``)."""
    return f"{scope}-cal-{stat}-{bin_index}"


def _count_keys() -> frozenset[str]:
    curves = [
        curve_key(scope, k, stat, i)
        for scope in SCOPES
        for k in range(MAX_CLASSES)
        for stat in CURVE_STATS
        for i in range(GRID)
    ]
    sizes = [
        curve_key(scope, k, size)
        for scope in SCOPES
        for k in range(MAX_CLASSES)
        for size in CLASS_SIZES
    ]
    bins = [
        calibration_key(split, stat, b)
        for split in EVAL_SPLITS
        for stat in CAL_STATS
        for b in range(CAL_BINS)
    ]
    return frozenset(curves + sizes + bins)


TRAIN_METRICS_ALLOWED = frozenset(
    {
        NUM_EXAMPLES,
        SITE_INDEX,
        TRAIN_LOSS,
        EPSILON,
        DELTA,
        NOISE_MULTIPLIER,
        SAMPLE_RATE,
        TRAIN_STATUS,
    }
)
_EVAL_SCALARS = frozenset(
    {
        NUM_EXAMPLES,
        SITE_INDEX,
        EVAL_LOSS,
        EVAL_ACC,
        EVAL_AUC,
        TRUE_POS,
        FALSE_POS,
        TRUE_NEG,
        FALSE_NEG,
    }
    | CONFUSION_KEYS
)


@functools.cache
def _lazy(name: str) -> frozenset[str]:
    if name == "COUNT_KEYS":
        return _count_keys()
    return _EVAL_SCALARS | _lazy("COUNT_KEYS")


def __getattr__(name: str) -> frozenset[str]:
    """``COUNT_KEYS`` and ``EVAL_METRICS_ALLOWED`` (~33k names) are built on first use."""
    if name in ("COUNT_KEYS", "EVAL_METRICS_ALLOWED"):
        return _lazy(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Node-config keys a hospital sets on its SuperNode (``--node-config``).
NODE_DATA_PATH = "data-path"
NODE_SITE_ID = "site-id"
NODE_PARTITION_ID = "partition-id"
# Where the site keeps its privacy accountant state (outside any run directory), and the
# site's own lifetime epsilon budget over every run recorded there.
NODE_STATE_DIR = "state-dir"
NODE_EPSILON_BUDGET = "epsilon-budget"
# The Ed25519 key that signs the site's privacy ledger (``medfed certs add-site`` writes it);
# without it the site creates ``<state-dir>/ledger-key.pem`` on first use.
NODE_LEDGER_KEY = "ledger-key"
NODE_CACHE_DIR = "cache-dir"  # optional: where the site's tensor cache lives
NODE_CACHE = "cache"  # optional: false = no tensor cache at this site
NODE_DECODE_WORKERS = "decode-workers"  # optional: processes for a first ingest (0 = per core)
NODE_AUDIT_DIR = "audit-dir"  # optional: keep a copy of every reply (client.outbound)
# The site's privacy policy (``client.policy``): node config only, never the run config.
NODE_REQUIRE_DP = "require-dp"  # default true at a site with a data-path
NODE_MAX_EPSILON = "max-epsilon"  # per run
NODE_MAX_DELTA = "max-delta"
NODE_MIN_NOISE_MULTIPLIER = "min-noise-multiplier"
NODE_MAX_ROUNDS = "max-rounds"
POLICY_KEYS = frozenset(
    {NODE_REQUIRE_DP, NODE_MAX_EPSILON, NODE_MAX_DELTA, NODE_MIN_NOISE_MULTIPLIER, NODE_MAX_ROUNDS}
)
