"""What both sides share: typed settings, errors, wire keys, models, parameters, privacy math.

``common`` is the bottom of the import graph: ``client``, ``server``, ``simulations``,
``deploy`` and ``medfed`` import it; it imports none of them. Modules: ``config`` (the typed
``MedfedConfig`` built once from the run config or CLI flags), ``errors``, ``keys`` (record
keys used on the wire), ``models`` (registry: ``build_model``), ``params`` (model <->
``ArrayRecord``), ``privacy`` (accountants, noise calibration), ``planning`` (a round's
batch, steps and noise, shared by the sites and ``medfed privacy plan``), ``ledger`` and
``signing`` (the sites' signed, hash-chained privacy ledger), ``metrics``, ``generative``
(the on-site generator's model), ``model_file`` (the ``model.pt`` format: weights,
preprocessing, threshold), ``gradcam`` (explanations), and
``data`` (site data: DICOM / MedMNIST folders -> tensors).

The names below are imported on first use, so ``import common`` (which every module does)
stays as cheap as an empty package; ``build_model`` needs torch.
"""

from typing import TYPE_CHECKING

from common._lazy import lazy_exports

if TYPE_CHECKING:
    from common.config import MedfedConfig
    from common.errors import ConfigError, MedfedError, SiteDataError
    from common.models import build_model

__all__ = ["ConfigError", "MedfedConfig", "MedfedError", "SiteDataError", "build_model"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ConfigError": "common.errors",
        "MedfedConfig": "common.config",
        "MedfedError": "common.errors",
        "SiteDataError": "common.errors",
        "build_model": "common.models",
    },
)
