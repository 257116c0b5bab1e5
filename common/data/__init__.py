"""Site data: DICOM or MedMNIST folders -> preprocessed tensors that never leave the site.

Modules: ``manifest`` (folder layouts), ``dicom`` (decode + pixel semantics), ``volumes``
(series, frames), ``preprocess`` (resize, normalise), ``cache`` (on-disk tensor cache),
``ingest`` (the pipeline), ``sites`` (``load_site``, ``SiteStore``), ``medmnist`` (.npz),
``phi`` (identifying tags), ``readiness`` (``medfed site check``), ``synthetic`` (demo data).
"""
