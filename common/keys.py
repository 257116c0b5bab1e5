"""Names used on the wire between ServerApp and ClientApp, in one place.

The allow-lists are the complete set of scalar metrics a site may send back. Anything else
(strings, arrays other than model parameters, file names, DICOM tags) must never leave a site;
``tests/test_wire_allowlist.py`` checks real replies against these sets.
"""

from __future__ import annotations

ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"

NUM_EXAMPLES = "num-examples"
SITE_INDEX = "site-index"

# Set by Flower's strategies in the train/evaluate ConfigRecord (not part of MedfedConfig).
SERVER_ROUND = "server-round"
PROXIMAL_MU = "proximal-mu"  # FedProx: weight of the client's proximal term

TRAIN_LOSS = "train-loss"
EPSILON = "epsilon"
DELTA = "delta"
NOISE_MULTIPLIER = "noise-multiplier"
SAMPLE_RATE = "sample-rate"

EVAL_LOSS = "eval-loss"
EVAL_ACC = "eval-acc"
EVAL_AUC = "eval-auc"
TRUE_POS = "tp"
FALSE_POS = "fp"
TRUE_NEG = "tn"
FALSE_NEG = "fn"

TRAIN_METRICS_ALLOWED = frozenset(
    {NUM_EXAMPLES, SITE_INDEX, TRAIN_LOSS, EPSILON, DELTA, NOISE_MULTIPLIER, SAMPLE_RATE}
)
EVAL_METRICS_ALLOWED = frozenset(
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
)

# Node-config keys a hospital sets on its SuperNode (``--node-config``).
NODE_DATA_PATH = "data-path"
NODE_SITE_ID = "site-id"
NODE_PARTITION_ID = "partition-id"
NODE_AUDIT_DIR = "audit-dir"  # optional: keep a copy of every reply (client.outbound)
