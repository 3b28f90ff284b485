"""The config layer (no TensorFlow): what a run is and where it is kept.

- `schema`: the typed sections and their defaults;
- `loader`: YAML with `base:` inheritance, `--set` overrides, validation (re-exported here, so that
  `from pipeline import config` reads as "the config API");
- `rundir`: the run directory's files, its lock, the "holds another config" refusal.
"""

from pipeline.config.loader import *  # noqa: F401,F403
from pipeline.config.loader import yaml  # noqa: F401  (callers catch config.yaml.YAMLError)
