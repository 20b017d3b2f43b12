"""The strict in-process object store, one module per concern.

``patches``, ``selectors``, ``schema`` (unknown fields, CRD transition rules), ``rules`` (the
apiserver's validation), ``objectstore`` (:class:`~nvdra.kubeletplugin.store.objectstore.ObjectStore`)
and ``watch``; :mod:`nvdra.kubeletplugin.objects` holds what they implement: resource types and the
``ObjectApi`` protocol.
"""
