"""The base every layer may import, `models/` included (no TensorFlow, no config): the user-error
contract (`errors`), the registry (`registry`) and atomic file writes (`fileio`)."""
