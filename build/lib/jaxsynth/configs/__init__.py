"""The named configs (`jaxsynth train --config dcgan:smoke`), shipped as `jaxsynth.configs`.

This folder stays at the top of the repository, where users read and copy configs, and is
installed as the subpackage `jaxsynth.configs` (pyproject maps it), so a wheel or a non-editable
install carries every named config. A config module defines `get_config(arg)` and `VARIANTS`;
modules whose name starts with `_` hold shared presets and are not configs themselves.
"""
