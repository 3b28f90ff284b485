"""pipeline/compat/, "Layer graphs": one test per Keras internal it reads (`Layer._layers`,
`Operation._inbound_nodes`, `Functional._nodes` and its key format, the TensorFlow backend's
`self.x = self.x` short-circuit). Each failure names the installed Keras version, so an upgrade that
changes an internal says where to look. Tiny models, nothing trained."""

from __future__ import annotations

import keras
import pytest

from pipeline import compat


def keras_changed(what: str) -> str:
    return (
        f"Keras {keras.__version__}: {what}. The 'Layer graphs' section of pipeline/compat/ relies on it "
        f"(written against Keras 3.15.1); adapt it there."
    )


class Pair(keras.layers.Layer):
    """A custom layer that holds two layers (tracked as attributes, not in a graph)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(4, name="pair_first")
        self.second = keras.layers.Dense(2, name="pair_second")

    def call(self, x):
        return self.second(self.first(x))


def nested_model():
    """outer: image -> network(image) where network: rgb -> flip -> conv -> pair -> out; the conv layer
    `shared` is also called a second time in outer's graph."""
    rgb = keras.Input((8, 8, 3), name="rgb")
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    x = shared(keras.ops.flip(rgb, axis=-1))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    network = keras.Model(rgb, Pair(name="pair")(x), name="network")
    image = keras.Input((8, 8, 3), name="image")
    again = keras.layers.GlobalAveragePooling2D(name="again_pool")(shared(image))
    outer = keras.Model(image, keras.layers.Concatenate(name="joined")([network(image), again]), name="outer")
    return outer, network, shared


def test_sublayers_reads_keras_private_layer_list():
    try:
        pair_children = compat.sublayers(Pair())
    except AttributeError as error:
        pytest.fail(keras_changed(f"Layer._layers is gone ({error})"))
    assert [layer.name for layer in pair_children] == ["pair_first", "pair_second"], keras_changed(
        "Layer._layers no longer lists the layers a custom layer holds, in assignment order"
    )
    outer, network, _ = nested_model()
    assert compat.sublayers(network) == network.layers, keras_changed(
        "a functional model's Layer._layers is no longer its `layers`"
    )
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    assert [type(layer).__name__ for layer in compat.sublayers(sequential)] == ["InputLayer", "Dense"], keras_changed(
        "a Sequential's Layer._layers no longer starts with its InputLayer"
    )


def test_walkers_visit_each_layer_once_depth_first():
    outer, network, shared = nested_model()
    tracked = [layer.name for layer in compat.iter_layers(outer)]
    # Depth first in graph order, a container right before its layers; `shared` (held by both models)
    # once, where first met; the custom layer's own layers included.
    assert tracked == [
        "image",
        "shared",
        "network",
        "rgb",
        "pool",
        "pair",
        "pair_first",
        "pair_second",
        "again_pool",
        "joined",
    ]
    assert [layer.name for layer in compat.iter_layers(network, include_self=True)] == [
        "network",
        "rgb",
        "shared",
        "pool",
        "pair",
        "pair_first",
        "pair_second",
    ]
    graph = [
        (tuple(a.name for a in ancestors), op.name if isinstance(op, keras.layers.Layer) else type(op).__name__)
        for ancestors, op in compat.walk_layers(outer, graph=True)
    ]  # ops are auto-named flip, flip_1...
    # The graph walk adds the flip operation, lists `shared` in each graph that calls it, and does not
    # enter the custom layer.
    assert graph == [
        (("outer",), "image"),
        (("outer",), "shared"),
        (("outer",), "network"),
        (("outer", "network"), "rgb"),
        (("outer", "network"), "Flip"),
        (("outer", "network"), "shared"),
        (("outer", "network"), "pool"),
        (("outer", "network"), "pair"),
        (("outer",), "again_pool"),
        (("outer",), "joined"),
    ]
    assert [layer.name for layer in compat.find_layer_path(outer, "pool")] == ["outer", "network", "pool"]
    assert compat.find_layer_path(outer, "shared") == [outer, shared]
    assert compat.find_layer(outer, "shared") is shared
    assert compat.find_layer(outer, "pair_first") is None  # inside a custom layer, not in a graph
    assert compat.find_layer(outer, "missing") is None


def test_force_trainable_works_around_the_tensorflow_short_circuit():
    outer, network, shared = nested_model()
    shared.trainable = False
    network.trainable = True  # already True: KerasAutoTrackable.__setattr__ returns before the setter runs
    assert not shared.trainable, keras_changed(
        "`layer.trainable = True` on an already trainable container now resets its sublayers (the "
        "`self.x = self.x` short-circuit in keras/src/backend/tensorflow/trackable.py is gone): "
        "compat.force_trainable can become a plain assignment"
    )
    compat.force_trainable(outer, True)
    assert shared.trainable and len(outer.trainable_weights) == len(outer.weights)
    compat.force_trainable(network, False)
    assert not shared.trainable and not compat.find_layer(outer, "pair").trainable
    assert outer.trainable  # only `network` and what is inside it


def test_inbound_nodes_and_node_tensor():
    outer, network, shared = nested_model()
    try:
        nodes = compat.inbound_nodes(shared)
        shapes = [(tuple(node.input_tensors[0].shape), tuple(node.output_tensors[0].shape)) for node in nodes]
    except AttributeError as error:
        pytest.fail(keras_changed(f"Operation._inbound_nodes or Node.input_tensors/output_tensors changed ({error})"))
    assert shapes == [((None, 8, 8, 3), (None, 8, 8, 3))] * 2, keras_changed(
        "Operation._inbound_nodes no longer holds one node per symbolic call"
    )
    assert compat.node_tensor(shared, "output") is nodes[0].output_tensors[0]  # the first call's
    assert compat.node_tensor(shared, "input") is nodes[0].input_tensors[0]
    assert compat.node_tensor(network.get_layer("pool"), "output") is network.get_layer("pool").output
    assert compat.node_tensor(keras.layers.Dense(2), "output") is None  # never called
    assert compat.inbound_nodes(keras.layers.Dense(2)) == []


def test_nodes_in_reads_the_functional_node_keys():
    outer, network, shared = nested_model()
    try:
        in_network, in_outer = compat.nodes_in(network, shared), compat.nodes_in(outer, shared)
    except AttributeError as error:
        pytest.fail(keras_changed(f"Functional._nodes is gone ({error})"))
    all_nodes = compat.inbound_nodes(shared)
    assert in_network == [all_nodes[0]] and in_outer == [all_nodes[1]], keras_changed(
        "Functional._nodes keys are no longer '<id of the operation>_ib-<index in its inbound nodes>' "
        "(make_node_key in keras/src/ops/function.py)"
    )
    assert len(compat.nodes_in(outer, network)) == 1
    assert compat.nodes_in(network, network) == []
