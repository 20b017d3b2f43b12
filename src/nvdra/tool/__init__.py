"""nvdra.tool: the ``nvdra`` operator tool (devices, validate, explain, demo).

It sits above :mod:`nvdra.plugins`: it shows what the plugins would publish and runs them in-process
for the demo, but no process imports it.
"""
