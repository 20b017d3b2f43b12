"""nvdra.plugins.gpu: the ``gpu.nvidia.com`` kubelet plugin (``nvdra-gpu-plugin``) and the MPS daemon.

``serve`` wires the process (NVML backend, driver, toolkit helper, publisher, health, metrics);
``driver`` plans and applies claims (checkpoint, effects, CDI); ``sharing``, ``mps``, ``mig``, ``vfio``
and ``fabric`` are the executors of each kind of effect; ``main`` and ``mps_daemon`` are console scripts.
"""
