"""The strict in-process object store, one module per concern.

``api`` (resource types, the ``ObjectApi`` protocol, watch events, Status bodies), ``patches``,
``selectors``, ``schema`` (unknown fields, CRD transition rules), ``rules`` (the apiserver's validation),
``objectstore`` (:class:`~nvdra.kubeletplugin.store.objectstore.ObjectStore`) and ``watch``.
:mod:`nvdra.kubeletplugin.objects` re-exports the public names.
"""
