"""The fusion model's second input at a site: its clinical variables, encoded here.

For a fusion run (``data.clinical-columns`` set) the site fits the encoder
(``common.data.clinical``) on its own training split, every round from the same split, so
the fitted medians, means and scales never leave this process; image-only runs get None.
"""

from __future__ import annotations

from common.config import MedfedConfig
from common.data.clinical import EncodedClinical, encode_splits, records_for
from common.data.sitedata import SiteData


def clinical_features(data: SiteData, config: MedfedConfig) -> EncodedClinical | None:
    """The site's encoded clinical features per split, or None for an image-only run."""
    if not config.data.clinical_columns.strip():
        return None
    return encode_splits(
        records_for(data.train_clinical, len(data.train_y)),
        records_for(data.val_clinical, len(data.val_y)),  # type: ignore[arg-type]
        records_for(data.test_clinical, len(data.test_y)),
        columns_text=config.data.clinical_columns,
        impute=config.data.clinical_impute,
    )
