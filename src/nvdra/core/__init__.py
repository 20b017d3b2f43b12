"""nvdra.core: device models, opaque configs, feature gates, ResourceSlice rendering, errors.

Pure code: nothing here performs I/O or imports another nvdra package or an SDK.
"""
