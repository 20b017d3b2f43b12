"""nvdra.plugins: the NVIDIA DRA drivers and console scripts, built on the rest of nvdra."""
