"""Site data: DICOM or MedMNIST folders -> preprocessed tensors that never leave the site.

Modules: ``manifest`` (folder layouts), ``dicom`` (decode + pixel semantics), ``volumes``
(series, frames), ``preprocess`` (resize, normalise), ``cache`` (on-disk tensor cache),
``ingest`` (the pipeline), ``sites`` (``load_site``, ``SiteStore``), ``medmnist`` (.npz),
``phi`` (identifying tags), ``readiness`` (``medfed site check``), ``synthetic`` (demo data).

The names below are imported on first use (they need torch and pydicom).
"""

from typing import TYPE_CHECKING

from common._lazy import lazy_exports

if TYPE_CHECKING:
    from common.data.ingest import ingest_site
    from common.data.sitedata import SiteData
    from common.data.sites import SiteStore, load_site
    from common.data.synthetic import generate_site, site_name

__all__ = ["SiteData", "SiteStore", "generate_site", "ingest_site", "load_site", "site_name"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SiteData": "common.data.sitedata",
        "SiteStore": "common.data.sites",
        "generate_site": "common.data.synthetic",
        "ingest_site": "common.data.ingest",
        "load_site": "common.data.sites",
        "site_name": "common.data.synthetic",
    },
)
