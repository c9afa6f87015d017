"""neat-python's networks in: `from_neat(doc_or_path) -> Network`.

Reads the network JSON that neat-python 2.0 writes for a `FeedForwardNetwork`
(`neat.export.export_network_json`, format 1.0). A NEAT node computes
`z = act(bias + response * agg(w_i * z_i))` with neat-python's own activations; each becomes
one unit with the same bias, response, aggregation and the activation of the same formula
(neat's `sigmoid` is `neat_sigmoid`, its `lelu` is `leaky_relu` with slope 0.005, ...). Unit ids
are the node keys as strings ("-1", "0", "7"), roles come from the topology, and only enabled
connections become weights (as columns, the compact form for graphs of single units).

Recurrent, CTRNN and IZNN exports, custom activations or aggregations, and the aggregations
the service does not compute (product, max, min, maxabs, median) are refused with a
NetworkImportError that names what, and where.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from client._errors import NetworkImportError
from service.wire import Network

FORMAT_VERSION = "1.0"

#: neat-python's activation name -> (the unit's activation, its slope when it has one)
ACTIVATIONS: dict[str, tuple[str, float | None]] = {
    "sigmoid": ("neat_sigmoid", None),  # 1 / (1 + e^-clamp(5 s, -60, 60))
    "tanh": ("neat_tanh", None),  # tanh(clamp(2.5 s, -60, 60))
    "sin": ("neat_sin", None),  # sin(clamp(5 s, -60, 60))
    "gauss": ("neat_gauss", None),  # e^(-5 clamp(s, -3.4, 3.4)^2)
    "relu": ("relu", None),
    "elu": ("elu", None),
    "lelu": ("leaky_relu", 0.005),
    "selu": ("selu", None),
    "softplus": ("neat_softplus", None),  # 0.2 log(1 + e^clamp(5 s, -60, 60))
    "identity": ("identity", None),
    "clamped": ("clamped", None),
    "inv": ("neat_inv", None),  # 1/s, 0 at s = 0
    "log": ("neat_log", None),  # log(max(s, 1e-7))
    "exp": ("neat_exp", None),  # e^clamp(s, -60, 60)
    "abs": ("abs", None),
    "hat": ("hat", None),
    "square": ("square", None),
    "cube": ("cube", None),
}
#: neat-python's aggregations the service computes
AGGREGATIONS = ("sum", "mean")
#: the network types neat-python exports that are not feed-forward, as neat names them
NOT_FEEDFORWARD = {"recurrent": "a RecurrentNetwork", "ctrnn": "a CTRNN", "iznn": "an IZNN"}
UNIT_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def from_neat(doc_or_path: Mapping[str, Any] | str | os.PathLike[str]) -> Network:
    """A gradserve Network from neat-python's network JSON (format 1.0, a FeedForwardNetwork).

    `doc_or_path` is the parsed document, the JSON text `export_network_json` returns, or the
    path of the file it wrote.
    """
    doc = _load(doc_or_path)
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise NetworkImportError(
            f"neat-python network JSON format {version!r} is not supported (only {FORMAT_VERSION!r})"
        )
    kind = doc.get("network_type")
    if kind in NOT_FEEDFORWARD:
        raise NetworkImportError(
            f"the document is {NOT_FEEDFORWARD[kind]} export (network_type {kind!r}): only "
            "feed-forward networks (neat.nn.FeedForwardNetwork) have gradients here"
        )
    if kind != "feedforward":
        raise NetworkImportError(f"unknown network_type {kind!r}: expected 'feedforward'")
    topology = _field(doc, "topology", dict)
    inputs = [_key(k) for k in _field(topology, "input_keys", list)]
    outputs = [_key(k) for k in _field(topology, "output_keys", list)]
    nodes: dict[str, Mapping[str, Any]] = {}
    for node in _field(doc, "nodes", list):
        nodes[_key(_field(node, "id", (int, str)))] = node
    for key in inputs + outputs:
        if key not in nodes:
            raise NetworkImportError(f"node {key} of the topology is not among the document's nodes")
    units: list[dict[str, Any]] = [{"id": key, "role": "input"} for key in inputs]
    for key, node in nodes.items():
        if key not in inputs:
            units.append(_unit(key, node, "output" if key in outputs else "hidden"))
    sources, targets, values = [], [], []
    for k, conn in enumerate(_field(doc, "connections", list)):
        if not _field(conn, "enabled", bool):
            continue
        source, target = _key(_field(conn, "from", (int, str))), _key(_field(conn, "to", (int, str)))
        for end in (source, target):
            if end not in nodes:
                raise NetworkImportError(
                    f"connection {k} ({source} -> {target}) names node {end}, which is not listed"
                )
        if target in inputs:
            raise NetworkImportError(f"connection {k} ({source} -> {target}) points into input node {target}")
        sources.append(source)
        targets.append(target)
        values.append(_number(conn, "weight", f"connection {source} -> {target}"))
    return Network.model_validate(
        {"units": units, "weights": {"source": sources, "target": targets, "value": values}}
    )


def _load(doc_or_path: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(doc_or_path, Mapping):
        return doc_or_path
    text = str(doc_or_path) if isinstance(doc_or_path, str) else None
    if text is None or not text.lstrip().startswith("{"):
        try:
            text = Path(doc_or_path).read_text()
        except OSError as exc:
            raise NetworkImportError(f"cannot read {os.fspath(doc_or_path)}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NetworkImportError(f"the neat-python network is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise NetworkImportError("the neat-python network JSON must be an object")
    return doc


def _field(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(name) if isinstance(doc, Mapping) else None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise NetworkImportError(f"the neat-python network JSON has no valid {name!r} (in {_brief(doc)})")
    return value


def _brief(doc: Any) -> str:
    text = json.dumps(doc) if isinstance(doc, (dict, list)) else repr(doc)
    return text if len(text) <= 80 else text[:77] + "..."


def _key(value: Any) -> str:
    """A node key as a unit id: neat-python's keys are ints ("-1", "0", "7")."""
    key = str(value)
    if isinstance(value, bool) or not UNIT_ID.fullmatch(key):
        raise NetworkImportError(
            f"node key {value!r} is not a valid unit id ([A-Za-z0-9_.:-], 1 to 64 characters)"
        )
    return key


def _number(doc: Mapping[str, Any], name: str, where: str) -> float:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NetworkImportError(f"{where} has no number {name!r}")
    return float(value)


def _function(node: Mapping[str, Any], kind: str, key: str) -> str:
    """The name of a node's activation or aggregation; a custom one is refused by name."""
    info = node.get(kind)
    name = info.get("name") if isinstance(info, Mapping) else info
    if not isinstance(name, str):
        raise NetworkImportError(f"node {key} has no {kind} name")
    if isinstance(info, Mapping) and info.get("custom"):
        raise NetworkImportError(
            f"node {key} uses the custom {kind} {name!r}: only neat-python's built-in ones can be imported"
        )
    return name


def _unit(key: str, node: Mapping[str, Any], role: str) -> dict[str, Any]:
    activation = _function(node, "activation", key)
    if activation not in ACTIVATIONS:
        raise NetworkImportError(
            f"node {key} uses the activation {activation!r}, which neat-python does not define"
        )
    aggregation = _function(node, "aggregation", key)
    if aggregation not in AGGREGATIONS:
        raise NetworkImportError(
            f"node {key} uses the aggregation {aggregation!r}: "
            f"only {' and '.join(AGGREGATIONS)} are supported"
        )
    name, slope = ACTIVATIONS[activation]
    unit: dict[str, Any] = {
        "id": key,
        "role": role,
        "activation": name,
        "bias": _number(node, "bias", f"node {key}"),
        "response": _number(node, "response", f"node {key}"),
    }
    if aggregation != "sum":
        unit["aggregation"] = aggregation
    if slope is not None:
        unit["slope"] = slope
    return unit
