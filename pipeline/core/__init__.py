"""The base every layer may import, `models/` included (no TensorFlow, no config): the user-error
contract (`errors`), the registry (`registry`), atomic file writes (`fileio`), signals (`signals`) and the choice of
TensorFlow's CPU kernels made before TensorFlow is imported (`cpu_kernels`)."""
