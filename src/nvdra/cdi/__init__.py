"""nvdra.cdi: the CDI spec model, container-edit rendering, qualified names and atomic writes."""
