"""Transfer learning: a `keras.applications` backbone behind its own preprocessing, with a new head.

    image [0, 255], 1 or 3 channels
      -> grey_to_rgb      (1-channel input only: the grey channel repeated three times)
      -> upscale          (upscale_to only: keras.layers.Resizing)
      -> preprocess       (the backbone's `preprocess_input` as layers: BGR + mean for caffe, [-1, 1] for tf,
                           ImageNet mean/std for torch, nothing for EfficientNet, which has it built in)
      -> backbone         (the keras.applications base, include_top=False, ONE nested layer; in inference
                           mode when it starts from trained weights, see below)
      -> pool             (avg | max | flatten)
      -> fc               (Dense(dense_units, relu); absent when dense_units is 0 or None)
      -> dropout -> logits -> probabilities (float32 softmax)

The models normalise their own input, so the pipeline must feed them raw [0, 255] pixels: both builders
carry `includes_preprocessing = True` (see `models.registry.includes_preprocessing`).

Inference mode: a backbone that starts from trained weights (`imagenet` or a file from an earlier run)
always runs with `training=False`, so its BatchNormalization keeps the moving statistics it came with and
normalises with them while the head trains and while the backbone is fine-tuned (its `trainable` flag still
decides which weights the optimizer changes; gamma and beta are then updated). `base(x, training=False)`
in a functional graph is not enough in Keras 3: an outer `fit` passes `training=True` down to nested models
and overrides it (keras-team/keras#20285), so the backbone is a `BackboneModel`, a functional model that
forces inference mode. With `weights=None` there are no statistics worth keeping: the backbone then
trains normally (BatchNormalization learns its statistics), otherwise a BatchNormalization backbone with
moving mean 0 and variance 1 would never normalise and a random MobileNetV2 outputs ~1e-12.
`BackboneModel` is registered for serialization: `keras.models.load_model` of a saved model needs `models`
(or `models.applications`) imported first, as every entry point of this pipeline does.

Invalid arguments raise `ValueError` in Keras' style (what is wrong, what is allowed, `Received:
name=value`); weights that cannot be obtained or do not fit raise `models.weights.WeightsError`.
Transfer from an earlier run's files lives in models/weights.py.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from models import weights as weights_lib
from models.registry import register_model
from models.weights import WeightsError  # raised here too; callers catch it as applications.WeightsError
from pipeline.core.errors import did_you_mean


@keras.saving.register_keras_serializable(package="pipeline")
class BackboneModel(keras.Model):
    """A functional model that, with `inference_mode=True`, always runs its layers with `training=False`.

    Built as `BackboneModel(base.input, base.output, name=..., inference_mode=...)` from an existing
    functional model, it shares that model's layers and weights. In inference mode, BatchNormalization
    inside it uses and keeps its moving statistics even while the surrounding model trains and even when
    it is trainable (its gamma and beta are still updated by the optimizer then), and dropout inside it
    is off. With `inference_mode=False` it is a plain functional model.
    """

    def __init__(self, *args, inference_mode: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.inference_mode = bool(inference_mode)

    def call(self, inputs, training=None, mask=None, **kwargs):
        if self.inference_mode:
            training = False
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def get_config(self):
        return {**super().get_config(), "inference_mode": self.inference_mode}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inference_mode = config.pop("inference_mode", True)
        model = super().from_config(config, custom_objects=custom_objects)
        model.inference_mode = bool(inference_mode)
        return model


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    constructor: str  # attribute of keras.applications
    family: str  # keras.applications submodule whose preprocess_input the model reproduces
    preprocessing: str  # caffe | tf | torch | none
    min_size: int  # smallest height and width keras.applications accepts without the top
    weights_file: str  # the no-top ImageNet weights file Keras downloads ({rows}: MobileNetV2's size)
    weights_url: str  # the folder it is downloaded from


_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"

BACKBONES = {
    "vgg16": BackboneSpec(
        "VGG16", "vgg16", "caffe", 32, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "vgg16/"
    ),
    "vgg19": BackboneSpec(
        "VGG19", "vgg19", "caffe", 32, "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "vgg19/"
    ),
    "resnet50": BackboneSpec(
        "ResNet50", "resnet50", "caffe", 32, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "resnet/"
    ),
    "mobilenet_v2": BackboneSpec(
        "MobileNetV2",
        "mobilenet_v2",
        "tf",
        32,
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
        _GCS + "mobilenet_v2/",
    ),
    "efficientnet_b0": BackboneSpec(
        "EfficientNetB0",
        "efficientnet",
        "none",
        32,
        "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/",
    ),
    "inception_v3": BackboneSpec(
        "InceptionV3",
        "inception_v3",
        "tf",
        75,
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _GCS + "inception_v3/",
    ),
    "densenet121": BackboneSpec(
        "DenseNet121",
        "densenet",
        "torch",
        32,
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _GCS + "densenet/",
    ),
}

POOLINGS = ("avg", "max", "flatten")

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


@register_model()
def applications(
    *,
    input_shape=(224, 224, 3),
    num_classes=10,
    backbone="vgg16",
    weights=None,
    pooling="avg",
    dense_units=256,
    dropout_rate=0.5,
    upscale_to=None,
    bn_momentum=None,
):
    """A keras.applications backbone with its preprocessing inside the model and a new head.

    Args:
        input_shape: (height, width, channels) of [0, 255] pixels, channels 1 or 3.
        backbone: vgg16, vgg19, resnet50, mobilenet_v2, efficientnet_b0, inception_v3 or densenet121.
        weights: None (random initialisation; the backbone's BatchNormalization then trains normally);
            "imagenet" (downloaded once by Keras into ~/.keras/models; offline, place the file named in the
            error there by hand); or the path of a file written by an earlier run of this pipeline
            (a relative path is taken from the working directory):
            - `.keras` (e.g. runs/<exp>/<time>/checkpoints/best.keras, the whole model, wrapped or not):
              the layer named `backbone` is found (also inside train.py's outer model) and its weights
              copied; the head layers (fc, logits) are copied too where their shapes match (same class
              count), otherwise the new head is kept. The file's backbone must be the same architecture
              (any input size; channels and head options may differ).
            - `.weights.h5` (`model.save_weights` of a model built by this builder, bare or inside
              train.py's wrapper): Keras loads it by position, so the file must come from the same
              backbone, channels, upscale_to, pooling and dense_units; only the class count may differ
              (the logits are then kept new). Use the `.keras` checkpoint for anything else.
            - any other `.h5`: a keras.applications weights file for this backbone without its top (e.g.
              vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 copied from an online machine), loaded by
              keras.applications itself, like `imagenet` but from where you put it.
            A file that does not fit raises `WeightsError` naming the file and the reason. With trained
            weights (imagenet or a file) the backbone runs in inference mode (see the module docstring).
        pooling: "avg" (GlobalAveragePooling2D), "max" (GlobalMaxPooling2D) or "flatten".
        dense_units: units of the ReLU layer before the classifier; 0 or None for none.
        dropout_rate: dropout before the classifier.
        upscale_to: [height, width] (or one int) the input is resized to inside the model, for inputs
            below the backbone's minimum (e.g. 28x28 MNIST into VGG16's 32x32).
        bn_momentum: momentum of the backbone's BatchNormalization layers when they train (weights=None);
            None keeps keras.applications' value (0.999 for MobileNetV2 and EfficientNet, 0.99 otherwise),
            made for ImageNet-length runs: over a few hundred or thousand steps the moving statistics lag
            the weights and inference-mode accuracy collapses (measured: chance level after one CIFAR-10
            epoch of MobileNetV2 at 0.999). 0.9 suits short runs from scratch.

    Raises:
        ValueError: an argument is invalid or the input is below the backbone's minimum.
        WeightsError (a RuntimeError): the weights file is missing, cannot be downloaded or read, or does
            not fit.
    """
    return _build(
        input_shape=input_shape,
        num_classes=num_classes,
        backbone=backbone,
        weights=weights,
        pooling=pooling,
        dense_units=dense_units,
        dropout_rate=dropout_rate,
        upscale_to=upscale_to,
        bn_momentum=bn_momentum,
        name=f"{backbone}_transfer",
    )


applications.includes_preprocessing = True


@register_model()
def vgg16_finetune(
    *,
    input_shape=(224, 224, 3),
    num_classes=10,
    weights=None,
    pooling="flatten",
    dense_units=256,
    dropout_rate=0.5,
    upscale_to=None,
):
    """The seed's VGG16 fine-tuning recipe: VGG16 base -> flatten -> dense 256 relu -> dropout 0.5 -> softmax.

    Same options as `applications` (without `backbone`). 14,714,688 parameters in the base.
    """
    return _build(
        input_shape=input_shape,
        num_classes=num_classes,
        backbone="vgg16",
        weights=weights,
        pooling=pooling,
        dense_units=dense_units,
        dropout_rate=dropout_rate,
        upscale_to=upscale_to,
        bn_momentum=None,
        name="vgg16_finetune",
    )


vgg16_finetune.includes_preprocessing = True


def _build(
    *, input_shape, num_classes, backbone, weights, pooling, dense_units, dropout_rate, upscale_to, bn_momentum, name
):
    spec = _backbone_spec(backbone)
    height, width, channels = _check_input_shape(input_shape)
    if pooling not in POOLINGS:
        raise ValueError(
            f"The `pooling` argument should be one of {', '.join(map(repr, POOLINGS))}"
            f"{did_you_mean(pooling, POOLINGS)}. Received: pooling={pooling!r}"
        )
    if dense_units is not None and (
        isinstance(dense_units, bool) or not isinstance(dense_units, int) or dense_units < 0
    ):
        raise ValueError(
            f"The `dense_units` argument should be an integer >= 0 or None. Received: dense_units={dense_units!r}"
        )
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) or not 0 <= dropout_rate < 1:
        raise ValueError(
            f"The `dropout_rate` argument should be a number in [0, 1). Received: dropout_rate={dropout_rate!r}"
        )
    if bn_momentum is not None and (
        isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not 0 <= bn_momentum < 1
    ):
        raise ValueError(
            f"The `bn_momentum` argument should be a number in [0, 1) or None. Received: bn_momentum={bn_momentum!r}"
        )
    upscale = _size_pair(upscale_to, "upscale_to") if upscale_to is not None else None
    weights = weights_lib.check_weights_argument(weights)
    size = upscale or (height, width)
    check_minimum_size(backbone, (height, width), upscale)

    inputs = keras.Input(shape=(height, width, channels), name="image")
    x = inputs
    if channels == 1:
        x = layers.Concatenate(axis=-1, dtype="float32", name="grey_to_rgb")([x, x, x])
    if upscale:
        x = layers.Resizing(upscale[0], upscale[1], interpolation="bilinear", dtype="float32", name="upscale")(x)
    x = preprocessing_model(backbone, (size[0], size[1], 3))(x)
    base = _backbone_model(backbone, spec, (size[0], size[1], 3), weights)
    if bn_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = float(bn_momentum)
    x = base(x, training=False)
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="pool")(x)
    else:
        x = layers.Flatten(name="pool")(x)
    if dense_units:
        x = layers.Dense(dense_units, activation="relu", name="fc")(x)
    x = layers.Dropout(dropout_rate, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    model = keras.Model(inputs, outputs, name=name)
    if weights not in (None, "imagenet") and not weights_lib.is_applications_file(weights):
        report = weights_lib.transfer_weights(model, weights)
        print(weights_lib.describe_transfer(report))
    return model


# --------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------


def _backbone_spec(backbone: str) -> BackboneSpec:
    if backbone not in BACKBONES:
        raise ValueError(
            f"Unknown backbone{did_you_mean(backbone, BACKBONES)}. The `backbone` argument should "
            f"be one of {', '.join(BACKBONES)}. Received: backbone={backbone!r}"
        )
    return BACKBONES[backbone]


def _check_input_shape(input_shape) -> tuple:
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            f"The `input_shape` argument should be (height, width, channels). "
            f"Received: input_shape={tuple(input_shape)}"
        )
    height, width, channels = tuple(input_shape)
    if channels not in (1, 3):
        raise ValueError(
            f"The applications models take 1 (grey, repeated to RGB) or 3 input channels. "
            f"Received: input_shape={tuple(input_shape)}"
        )
    return height, width, channels


def _size_pair(value, argument: str) -> tuple[int, int]:
    pair = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, (list, tuple))
        or len(pair) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair)
    ):
        raise ValueError(
            f"The `{argument}` argument should be [height, width] (positive integers) or one "
            f"positive integer. Received: {argument}={value!r}"
        )
    return int(pair[0]), int(pair[1])


def check_minimum_size(backbone: str, image_size, upscale_to=None) -> None:
    """Raises ValueError when the size reaching the backbone is below its minimum, naming both fixes.

    Args:
        backbone: a key of BACKBONES.
        image_size: (height, width) of the model's input; None for an unknown side.
        upscale_to: (height, width) the input is resized to inside the model, or None.
    """
    minimum = _backbone_spec(backbone).min_size
    if upscale_to is not None:
        if min(upscale_to) < minimum:
            raise ValueError(
                f"The `upscale_to` size is below {backbone}'s minimum of {minimum}x{minimum}: "
                f"upscale to at least {[max(int(s), minimum) for s in upscale_to]}. "
                f"Received: upscale_to={list(upscale_to)}"
            )
        return
    known = [s for s in image_size if s is not None]
    if known and min(known) < minimum:
        fixed = [minimum if s is None else max(int(s), minimum) for s in image_size]
        raise ValueError(
            f"The input size {list(image_size)} is below {backbone}'s minimum of {minimum}x{minimum}: "
            f"use images of at least {fixed}, or `upscale_to={fixed}` to upscale inside the model. "
            f"Received: image_size={list(image_size)}"
        )


def preprocessing_model(backbone: str, input_shape) -> keras.Model:
    """The backbone's `keras.applications.<family>.preprocess_input` as a nested model named `preprocess`.

    Built-in layers only (the caffe channel flip is a `keras.ops.flip` node), so it needs nothing
    registered to load, and it has no weights, so freezing or unfreezing layers cannot change it.
    Input: RGB pixels in [0, 255].
    """
    mode = _backbone_spec(backbone).preprocessing
    inputs = keras.Input(shape=tuple(input_shape), name="rgb")
    if mode == "caffe":  # RGB -> BGR, then subtract the ImageNet mean per channel (no scaling)
        x = keras.ops.flip(inputs, axis=-1)
        x = layers.Normalization(
            mean=_CAFFE_MEAN_BGR, variance=(1.0, 1.0, 1.0), dtype="float32", name="subtract_bgr_mean"
        )(x)
    elif mode == "tf":  # [-1, 1]
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, dtype="float32", name="scale_to_unit_range")(inputs)
    elif mode == "torch":  # [0, 1], then the ImageNet mean and std per channel
        x = layers.Normalization(
            mean=[255.0 * m for m in _TORCH_MEAN],
            variance=[(255.0 * s) ** 2 for s in _TORCH_STD],
            dtype="float32",
            name="imagenet_standardize",
        )(inputs)
    else:  # EfficientNet rescales and normalises inside the backbone
        x = layers.Identity(dtype="float32", name="built_into_backbone")(inputs)
    return keras.Model(inputs, x, name="preprocess")


def weights_file_name(backbone: str, size=(224, 224)) -> str:
    """The no-top ImageNet weights file keras.applications downloads for this backbone and input size."""
    spec = _backbone_spec(backbone)
    rows = int(size[0]) if size[0] == size[1] and size[0] in (96, 128, 160, 192, 224) else 224
    return spec.weights_file.format(rows=rows)


def _backbone_model(backbone: str, spec: BackboneSpec, shape, weights) -> BackboneModel:
    constructor = getattr(keras.applications, spec.constructor)
    # Weights keras.applications loads itself; the pipeline's own files are copied in after the build.
    direct = weights == "imagenet" or weights_lib.is_applications_file(weights)
    try:
        # Keras' default names are kept while building: EfficientNet derives its weights file from it.
        base = constructor(include_top=False, weights=weights if direct else None, input_shape=shape)
    except Exception as error:
        if weights_lib.is_applications_file(weights):
            raise WeightsError(
                f"{weights} is not a {backbone} no-top weights file ({weights_lib.first_line(error)}). Keras' "
                f"file for it is {weights_file_name(backbone, shape)}; a `.keras` checkpoint of an earlier run "
                f"also works. Received: weights={weights!r}"
            ) from error
        if weights != "imagenet":
            raise
        file_name = weights_file_name(backbone, shape)
        raise WeightsError(
            f"The ImageNet weights of {backbone} could not be downloaded or loaded "
            f"({weights_lib.first_line(error)}). Keras looks for {file_name} in {weights_lib.keras_models_dir()}. "
            f"Without internet, download {spec.weights_url}{file_name} on another machine and place it by hand "
            f"at ~/.keras/models/{file_name} (or $KERAS_HOME/models/); a partial or corrupt file there must be "
            f"replaced. Or start from random weights with weights=None. Received: weights='imagenet'"
        ) from error
    return BackboneModel(base.input, base.output, name="backbone", inference_mode=weights is not None)
