"""The YAML configs, one folder per stage (configs/<stage>/<model>_<data>.yaml).

This file makes the folder the package `ldm.configs` (see pyproject.toml), so that the configs ship
inside an installed ldm and are found with importlib.resources, while staying at the top of a checkout.
"""
