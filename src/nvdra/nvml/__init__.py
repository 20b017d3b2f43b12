"""nvdra.nvml: NVML backends (real and simulated) and discovery into nvdra.core models."""
