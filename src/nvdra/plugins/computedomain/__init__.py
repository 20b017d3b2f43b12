"""nvdra.plugins.computedomain: ComputeDomains (IMEX channels for multi-node NVLink).

Three processes: the ``compute-domain.nvidia.com`` kubelet plugin (``driver``, ``serve`` and
``assembly``, ``running``, ``plugin_main``), the cluster controller that turns a ComputeDomain into a
DaemonSet, claim templates and status (``controller``, ``controller_main``), and the per-node daemon
that runs ``nvidia-imex`` (``daemon``, ``daemon_main``). ``simcluster`` runs them together on simulated nodes.
"""
