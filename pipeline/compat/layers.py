"""Layer graphs: walking nested models and reading functional graphs' nodes.

Part of `pipeline.compat` (see its docstring); tested in tests/test_compat_*.py.
"""

from __future__ import annotations

import keras

# --------------------------------------------------------------------------------------------------
# Layer graphs
# --------------------------------------------------------------------------------------------------
#
# Walking nested models, and reading the functional graph's nodes. Keras 3 has no public API for either:
# `Model.layers` lists one level and misses the sublayers a custom layer tracks, and a functional model's
# nodes (which call of a layer belongs to which graph) are only in private attributes. Used by
# pipeline/training/phases.py, features.py, model_stats.py and models/weights.py; tests/compat/test_compat_layers.py has
# one test per access below.


def sublayers(layer) -> list:
    """The layers `layer` tracks directly, in tracking order (graph order for a functional model).

    Reads Keras' private `Layer._layers`, the list Keras itself walks to set `trainable` and to collect
    weights: for a model it is `model.layers` (plus a Sequential's InputLayer), and unlike `layers` it
    also exists on plain layers that hold other layers.
    """
    return list(layer._layers)


def _graph_children(layer) -> list:
    """A nested model's graph operations in graph order (layers, and operations such as a
    `keras.ops.flip` node that are not layers); [] for anything that is not a model."""
    if not isinstance(layer, keras.Model):
        return []
    operations = getattr(layer, "operations", None)  # functional models; a subclassed one has layers only
    return list(operations) if operations is not None else list(layer.layers)


def walk_layers(layer, *, include_self: bool = False, graph: bool = False):
    """Yields (ancestors, layer) for every layer nested in `layer`, depth first: each layer right before
    the layers inside it.

    Args:
        layer: a keras.Layer or keras.Model.
        include_self: also yield `layer` itself first (with ancestors ()).
        graph: False: the tracked layers (`sublayers`): everything whose weights and `trainable` flag
            belong to `layer`, also inside custom layers, each layer once (a layer held in two places:
            where first met). True: the functional graphs instead: each nested model's `operations` in
            graph order (operations that are not layers included), descending into nested models only,
            i.e. what runs, where: a layer called in two graphs is yielded once in each.
    Yields:
        (ancestors, layer): ancestors is the tuple of containers from `layer` (first) down to the one
        that holds the yielded layer directly.
    """
    children = _graph_children if graph else sublayers
    seen = {id(layer)}
    if include_self:
        yield (), layer

    def visit(container, ancestors):
        for child in children(container):
            if not graph:
                if id(child) in seen:
                    continue
                seen.add(id(child))
            yield ancestors, child
            yield from visit(child, (*ancestors, child))

    yield from visit(layer, (layer,))


def iter_layers(layer, *, include_self: bool = False):
    """Yields every layer tracked inside `layer` (nested models and their layers included), depth first,
    each once: the layers `walk_layers(layer)` yields, without their ancestors."""
    for _, found in walk_layers(layer, include_self=include_self):
        yield found


def find_layer_path(model, name: str) -> list | None:
    """[model, nested model, ..., the layer called `name`]: the chain of functional graphs that leads to
    the first layer of that name (depth first, see `walk_layers(graph=True)`), or None when none has it."""
    for ancestors, found in walk_layers(model, graph=True):
        if found.name == name:
            return [*ancestors, found]
    return None


def find_layer(model, name: str):
    """The layer called `name` anywhere in `model` (nested models included), or None."""
    path = find_layer_path(model, name)
    return None if path is None else path[-1]


def force_trainable(layer, value: bool) -> None:
    """Sets `trainable` on `layer` and every layer inside it, also where a flag already has that value.

    Under the TensorFlow backend `layer.trainable = value` does nothing when `layer.trainable` already
    is `value`: Keras' `KerasAutoTrackable.__setattr__` (keras/src/backend/tensorflow/trackable.py)
    returns early for `self.x = self.x` when the old value `is` the new one, as True and False always are,
    so sublayers frozen earlier would stay frozen under a container that is already trainable. The
    property's setter is called directly instead, on each layer.
    """
    setter = keras.layers.Layer.trainable.fset
    for found in list(iter_layers(layer, include_self=True)):
        setter(found, bool(value))


def inbound_nodes(operation) -> list:
    """The graph nodes of every symbolic call of `operation` (a layer or op), oldest first; each node has
    `input_tensors` and `output_tensors`. Reads Keras' private `Operation._inbound_nodes`."""
    return list(getattr(operation, "_inbound_nodes", None) or [])


def nodes_in(model, operation) -> list:
    """The nodes of `operation`'s calls that belong to the functional `model`'s own graph.

    A layer reused in several graphs (e.g. a network inside train.py's outer model, and the network's own
    graph) has one node per call; Keras' private `Functional._nodes` holds the keys of the graph's nodes,
    "<id of the operation>_ib-<index in its inbound nodes>" (`make_node_key` in
    keras/src/ops/function.py).
    """
    keys = model._nodes
    return [node for index, node in enumerate(inbound_nodes(operation)) if f"{id(operation)}_ib-{index}" in keys]


def node_tensor(operation, attribute: str):
    """`operation.output` or `.input` ("output" / "input"); None when the operation was never called
    symbolically. Where the public attribute raises otherwise (Keras 2 refused it for an operation called
    several times), the first call's tensor from `inbound_nodes` (a list when that call has several)."""
    try:
        return getattr(operation, attribute)
    except Exception:  # noqa: BLE001 - "never been called", or "has multiple inbound nodes"
        nodes = inbound_nodes(operation)
        if not nodes:
            return None
        tensors = nodes[0].output_tensors if attribute == "output" else nodes[0].input_tensors
        return tensors[0] if len(tensors) == 1 else tensors
