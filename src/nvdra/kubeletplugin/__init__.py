"""nvdra.kubeletplugin: the reusable DRA kubelet-plugin toolkit (Python's kubeletplugin helper)."""
