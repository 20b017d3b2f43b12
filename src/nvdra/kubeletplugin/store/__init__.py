"""The strict in-process object store, one module per concern.

``patches``, ``selectors``, ``schema`` (unknown fields, CRD transition rules), ``rules`` (the
apiserver's validation), ``state`` (objects, revision, event history), ``deletion`` (finalizers,
propagation, garbage collection), ``watch`` and ``objectstore``
(:class:`~nvdra.kubeletplugin.store.objectstore.ObjectStore`: configuration, reads, writes);
:mod:`nvdra.kubeletplugin.objects` holds what they implement: resource types and the ``ObjectApi``
protocol.
"""
