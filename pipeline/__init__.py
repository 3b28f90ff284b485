"""A TensorFlow/Keras image-classification training pipeline driven by YAML experiments."""
