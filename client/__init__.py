"""The hospital side: the ClientApp that trains and evaluates on a site's own data.

Flower loads the ClientApp object as ``client.app:app`` (pyproject
``[tool.flwr.app.components]``); ``build_client_app(mods)`` builds one with extra client mods
(simulations add dropout and fault mods this way). Modules: ``app`` (message handlers),
``site`` (which data a node reads), ``train`` (DP-SGD with Opacus), ``budget`` and
``privacy_state`` (the site's ε budget: its signed privacy ledger, on its own disk),
``policy`` (the site's privacy policy from its node config: the runs it agrees to train),
``evaluate``, ``augment`` (on-site generative augmentation: the site's own DP-trained
generator), ``proximal`` (FedProx term), ``secagg`` (SecAgg+ client), ``outbound`` (error
redaction, outbound audit),
``review`` (what a Flower app bundle contains, read before a site approves it),
``approvals`` (the apps a site approved), ``gate`` (the site's SuperExec: runs only approved
apps), ``warm_worker`` (one warm ClientApp process per approved app) and ``predict`` /
``predict_output`` (``medfed predict``: score new DICOM studies at the site with a saved model).

``client`` imports ``common`` only, never ``server``. The names below are imported on first
use (they need torch and Flower).
"""

from typing import TYPE_CHECKING

from common._lazy import lazy_exports

if TYPE_CHECKING:
    from client.app import build_client_app
    from client.evaluate import evaluate_model
    from client.policy import SitePolicy
    from client.review import review_fab

__all__ = ["SitePolicy", "build_client_app", "evaluate_model", "review_fab"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SitePolicy": "client.policy",
        "build_client_app": "client.app",
        "evaluate_model": "client.evaluate",
        "review_fab": "client.review",
    },
)
