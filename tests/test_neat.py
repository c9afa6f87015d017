"""neat-python's genomes in: grown and mutated by neat-python itself, exported with its own
exporter, imported with `client.from_neat`, and computed by a real server exactly as neat's
FeedForwardNetwork.activate computes them, with gradients (responses too) that match central
differences of neat's own forward pass."""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

neat = pytest.importorskip("neat")
from neat.export import export_network_json  # noqa: E402

from client import NetworkImportError, from_neat  # noqa: E402
from client.cli import main  # noqa: E402

#: every activation and the two aggregations the service computes, drawn at random per node;
#: mutation rates up, so a dozen mutations change the structure and every parameter
CONFIG = """
[NEAT]
fitness_criterion = max
fitness_threshold = 1e9
pop_size = 4
reset_on_extinction = False
no_fitness_termination = True

[DefaultGenome]
num_inputs = 3
num_hidden = 2
num_outputs = 2
feed_forward = True
initial_connection = full_nodirect
activation_default = random
activation_mutate_rate = 0.5
activation_options = {activations}
aggregation_default = random
aggregation_mutate_rate = 0.3
aggregation_options = {aggregations}
bias_init_mean = 0.0
bias_init_stdev = 1.0
bias_init_type = gaussian
bias_max_value = 30.0
bias_min_value = -30.0
bias_mutate_power = 0.5
bias_mutate_rate = 0.7
bias_replace_rate = 0.1
response_init_mean = 1.0
response_init_stdev = 0.5
response_init_type = gaussian
response_max_value = 30.0
response_min_value = -30.0
response_mutate_power = 0.5
response_mutate_rate = 0.7
response_replace_rate = 0.1
weight_init_mean = 0.0
weight_init_stdev = 1.0
weight_init_type = gaussian
weight_max_value = 30
weight_min_value = -30
weight_mutate_power = 0.5
weight_mutate_rate = 0.8
weight_replace_rate = 0.1
enabled_default = True
enabled_mutate_rate = 0.2
enabled_rate_to_true_add = 0.0
enabled_rate_to_false_add = 0.0
conn_add_prob = 0.9
conn_delete_prob = 0.1
node_add_prob = 0.7
node_delete_prob = 0.1
single_structural_mutation = False
structural_mutation_surer = default
compatibility_disjoint_coefficient = 1.0
compatibility_weight_coefficient = 0.5

[DefaultSpeciesSet]
compatibility_threshold = 3.0

[DefaultStagnation]
species_fitness_func = max
max_stagnation = 20
species_elitism = 2

[DefaultReproduction]
elitism = 2
survival_threshold = 0.2
min_species_size = 1
"""

ALL_ACTIVATIONS = (
    "sigmoid tanh sin gauss relu elu lelu selu softplus identity clamped inv log exp abs hat square cube"
)
#: the activations whose derivative is smooth enough for central differences at any point
#: the genomes reach (no e^60, 1/s near 0 or log's floor), for the gradient tests
SMOOTH_ACTIVATIONS = "sigmoid tanh sin gauss relu elu lelu selu softplus identity clamped abs hat square"
SEEDS = range(8)
FORWARD_RTOL = 1e-12


def config(tmp_path: Path, activations: str = ALL_ACTIVATIONS, aggregations: str = "sum mean") -> Any:
    path = tmp_path / f"neat-{abs(hash((activations, aggregations)))}.ini"
    path.write_text(CONFIG.format(activations=activations, aggregations=aggregations))
    return neat.Config(
        neat.DefaultGenome,
        neat.DefaultReproduction,
        neat.DefaultSpeciesSet,
        neat.DefaultStagnation,
        str(path),
    )


def grown(cfg: Any, seed: int, mutations: int = 12) -> Any:
    """A genome of a fresh Population (which sets up the innovation tracker), mutated."""
    population = neat.Population(cfg, seed=seed)
    genome = population.population[min(population.population)]
    for _ in range(mutations):
        genome.mutate(cfg.genome_config)
    return genome


def inputs_for(net: Any, seed: int, batch: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=1.5, size=(batch, len(net.input_nodes)))


def outputs_of(net: Any, x: np.ndarray) -> np.ndarray:
    return np.array([net.activate(list(map(float, row))) for row in x])


def samples(net: Any, x: np.ndarray, y: np.ndarray | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": {str(k): x[:, [i]].tolist() for i, k in enumerate(net.input_nodes)}}
    if y is not None:
        body["targets"] = {str(k): y[:, [i]].tolist() for i, k in enumerate(net.output_nodes)}
    return body


def post(http: httpx.Client, endpoint: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(
        f"/v1/{endpoint}", content=json.dumps(body), headers={"content-type": "application/json"}
    )


def imported(net: Any) -> dict[str, Any]:
    network = from_neat(export_network_json(net))
    return json.loads(network.model_dump_json(exclude_none=True))


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("seed", SEEDS)
def test_forward_is_neats_activate(http: httpx.Client, tmp_path: Path, seed: int) -> None:
    cfg = config(tmp_path)
    net = neat.nn.FeedForwardNetwork.create(grown(cfg, seed), cfg)
    x = inputs_for(net, seed)
    want = outputs_of(net, x)
    answer = post(http, "forward", {"network": imported(net), "samples": samples(net, x)})
    if not np.isfinite(want).all():  # neat's inf (1/s, e^60 squared ...) is refused, named
        assert answer.status_code == 422
        assert answer.json()["type"].endswith("non-finite-result")
        return
    assert answer.status_code == 200, answer.text
    got = np.column_stack([np.asarray(answer.json()["outputs"][str(k)]).ravel() for k in net.output_nodes])
    error = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    assert error.max() <= FORWARD_RTOL, (error.max(), got, want)


def test_the_genomes_use_what_they_are_meant_to(tmp_path: Path) -> None:
    """The genomes the tests grow: every activation and both aggregations, hidden units,
    responses other than 1 and disabled connections (which import as no weight)."""
    cfg = config(tmp_path)
    activations, aggregations, hidden, disabled = set(), set(), 0, 0
    for seed in SEEDS:
        genome = grown(cfg, seed)
        net = neat.nn.FeedForwardNetwork.create(genome, cfg)
        doc = json.loads(export_network_json(net))
        activations |= {n["activation"]["name"] for n in doc["nodes"] if n["type"] != "input"}
        aggregations |= {n["aggregation"]["name"] for n in doc["nodes"] if n["type"] != "input"}
        hidden += sum(n["type"] == "hidden" for n in doc["nodes"])
        disabled += sum(not c.enabled for c in genome.connections.values())
        network = from_neat(doc)
        assert len(network.weights.source) == len(doc["connections"])  # type: ignore[union-attr]
        assert any(u.response not in (None, 1.0) for u in network.units)
    assert aggregations == {"sum", "mean"}
    assert len(activations) >= 12
    assert hidden > 0
    assert disabled > 0


# ---------------------------------------------------------------- gradients


def neat_loss(net: Any, x: np.ndarray, y: np.ndarray) -> float:
    """The half squared error, mean over the batch, of neat's own forward pass."""
    return float(0.5 * ((outputs_of(net, x) - y) ** 2).sum(axis=1).mean())


def perturbed(net: Any, node: int, what: str, link: int | None, step: float) -> Any:
    """A copy of neat's network with one bias, response or incoming weight moved by `step`."""
    evals = []
    for key, act, agg, bias, response, links in net.node_evals:
        if key == node:
            if what == "bias":
                bias += step
            elif what == "response":
                response += step
            else:
                links = [(i, w + step if i == link else w) for i, w in links]
        evals.append((key, act, agg, bias, response, links))
    return neat.nn.FeedForwardNetwork(net.input_nodes, net.output_nodes, evals)


@pytest.mark.parametrize("seed", SEEDS)
def test_gradients_are_central_differences_of_neats_forward(
    http: httpx.Client, tmp_path: Path, seed: int
) -> None:
    cfg = config(tmp_path, SMOOTH_ACTIVATIONS)
    net = neat.nn.FeedForwardNetwork.create(grown(cfg, seed), cfg)
    x = inputs_for(net, seed)
    y = np.random.default_rng(seed + 100).normal(size=(x.shape[0], len(net.output_nodes)))
    answer = post(
        http, "gradients", {"network": imported(net), "samples": samples(net, x, y), "include_units": False}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["loss"] == pytest.approx(neat_loss(net, x, y), rel=1e-12, abs=1e-12)
    grads = body["gradients"]
    weights = dict(
        zip(
            zip(grads["weights"]["source"], grads["weights"]["target"], strict=True),
            grads["weights"]["value"],
            strict=True,
        )
    )
    eps = 1e-6
    checked = 0
    for key, _, _, _, _, links in net.node_evals:
        params: list[tuple[str, int | None, float]] = [
            ("bias", None, grads["biases"][str(key)]),
            ("response", None, grads["responses"][str(key)]),
        ]
        params += [("weight", i, weights[(str(i), str(key))]) for i, _ in links]
        for what, link, got in params:
            up = neat_loss(perturbed(net, key, what, link, eps), x, y)
            down = neat_loss(perturbed(net, key, what, link, -eps), x, y)
            numeric = (up - down) / (2 * eps)
            assert got == pytest.approx(numeric, rel=1e-5, abs=1e-6), (key, what, link)
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_check_passes_on_imported_genomes_and_sgd_trains_their_responses(
    http: httpx.Client, tmp_path: Path, seed: int
) -> None:
    cfg = config(tmp_path, SMOOTH_ACTIVATIONS)
    net = neat.nn.FeedForwardNetwork.create(grown(cfg, seed), cfg)
    x = inputs_for(net, seed)
    y = np.random.default_rng(seed).normal(size=(x.shape[0], len(net.output_nodes)))
    body = {"network": imported(net), "samples": samples(net, x, y)}
    checked = post(http, "check", body).json()
    assert checked["ok"], checked
    assert set(checked["responses"]) == {str(k) for k, *_ in net.node_evals}
    trained = post(http, "sgd", {**body, "learning_rate": 0.01, "epochs": 3}).json()
    assert trained["loss_after"] < trained["loss_before"]
    before = {u["id"]: u["response"] for u in body["network"]["units"] if "response" in u}
    after = {u["id"]: u["response"] for u in trained["network"]["units"] if "response" in u}
    assert before.keys() == after.keys()
    assert before != after


# ---------------------------------------------------------------- what is refused


def test_recurrent_and_ctrnn_exports_are_refused_by_name(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    genome = grown(cfg, 0)
    recurrent = export_network_json(neat.nn.RecurrentNetwork.create(genome, cfg))
    with pytest.raises(NetworkImportError, match="RecurrentNetwork"):
        from_neat(recurrent)
    ctrnn = export_network_json(neat.ctrnn.CTRNN.create(genome, cfg))
    with pytest.raises(NetworkImportError, match="CTRNN"):
        from_neat(ctrnn)
    iznn = {**json.loads(recurrent), "network_type": "iznn"}  # (an IZNN needs its own genome)
    with pytest.raises(NetworkImportError, match="IZNN"):
        from_neat(iznn)


def twice_activation(s: float) -> float:
    """A custom activation: neat's export names it by its function's name, less '_activation'."""
    return 2 * s


def test_custom_activations_and_other_aggregations_are_refused_naming_the_node(tmp_path: Path) -> None:
    cfg = config(tmp_path, "sigmoid", "sum")
    genome = grown(cfg, 1)
    cfg.genome_config.add_activation("twice", twice_activation)
    node = max(genome.nodes)
    genome.nodes[node].activation = "twice"
    with pytest.raises(NetworkImportError, match=rf"node {node} uses the custom activation 'twice'"):
        from_neat(export_network_json(neat.nn.FeedForwardNetwork.create(genome, cfg)))
    genome.nodes[node].activation = "sigmoid"
    for aggregation in ("product", "max", "min", "maxabs", "median"):
        genome.nodes[node].aggregation = aggregation
        with pytest.raises(NetworkImportError, match=rf"node {node} uses the aggregation '{aggregation}'"):
            from_neat(export_network_json(neat.nn.FeedForwardNetwork.create(genome, cfg)))


def test_a_mean_of_no_inputs_is_zero_as_in_neat(http: httpx.Client, tmp_path: Path) -> None:
    """A node with no enabled incoming connection computes act(bias) whatever its aggregation."""
    cfg = config(tmp_path, "tanh", "mean")
    genome = grown(cfg, 2, mutations=0)
    for conn in genome.connections.values():
        if conn.key[1] == 0:
            conn.enabled = False
    net = neat.nn.FeedForwardNetwork.create(genome, cfg)
    x = inputs_for(net, 2)
    answer = post(http, "forward", {"network": imported(net), "samples": samples(net, x)})
    got = np.asarray(answer.json()["outputs"]["0"]).ravel()
    np.testing.assert_allclose(got, outputs_of(net, x)[:, 0], rtol=FORWARD_RTOL)
    assert got == pytest.approx([math.tanh(2.5 * genome.nodes[0].bias)] * len(x), rel=1e-12)


# ---------------------------------------------------------------- the CLI


def test_cli_imports_a_neat_genome(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    net = neat.nn.FeedForwardNetwork.create(grown(cfg, 3), cfg)
    path = tmp_path / "genome.json"
    export_network_json(net, filepath=str(path))
    out = io.StringIO()
    assert main(["import", "neat", str(path)], stdout=out) == 0
    assert json.loads(out.getvalue()) == imported(net)
    piped = io.StringIO()
    assert main(["import", "neat", "--pretty"], stdin=io.StringIO(path.read_text()), stdout=piped) == 0
    assert json.loads(piped.getvalue()) == imported(net)


def test_cli_says_why_a_genome_cannot_be_imported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    path = tmp_path / "recurrent.json"
    export_network_json(neat.nn.RecurrentNetwork.create(grown(cfg, 0), cfg), filepath=str(path))
    assert main(["import", "neat", str(path)], stdout=io.StringIO()) == 1
    assert "RecurrentNetwork" in capsys.readouterr().err


def test_population_seeds_make_the_same_genome(tmp_path: Path) -> None:
    """The tests' genomes are reproducible: a Population's seed fixes neat's random draws (and
    each test reads its own config, whose node indexer numbers new nodes from the start)."""
    cfg = config(tmp_path)
    first = export_network_json(neat.nn.FeedForwardNetwork.create(grown(cfg, 5), cfg))
    random.seed(12345)  # whatever ran before
    again = config(tmp_path)
    second = export_network_json(neat.nn.FeedForwardNetwork.create(grown(again, 5), again))
    assert _without_metadata(first) == _without_metadata(second)


def _without_metadata(text: str) -> dict[str, Any]:
    return {k: v for k, v in json.loads(text).items() if k != "metadata"}


# ---------------------------------------------------------------- the unit fields on the wire

CHAIN = {
    "units": [
        {"id": "x", "role": "input"},
        {"id": "h", "activation": "neat_tanh"},
        {"id": "o", "role": "output", "activation": "identity"},
    ],
    "weights": [{"source": "x", "target": "h", "value": 0.5}, {"source": "h", "target": "o", "value": -0.3}],
}
BATCH = {"inputs": {"x": [[1.5], [-0.5]]}, "targets": {"o": [[0.25], [0.5]]}}


def test_responses_are_answered_only_when_the_network_gives_one(http: httpx.Client) -> None:
    plain = post(http, "gradients", {"network": CHAIN, "samples": BATCH, "per_sample": True})
    spelled = {
        **CHAIN,
        "units": [CHAIN["units"][0], {**CHAIN["units"][1], "aggregation": "sum"}, CHAIN["units"][2]],
    }
    assert (
        post(http, "gradients", {"network": spelled, "samples": BATCH, "per_sample": True}).content
        == plain.content
    )
    assert "responses" not in plain.json()["gradients"]
    given = {**CHAIN, "units": [CHAIN["units"][0], {**CHAIN["units"][1], "response": 1.0}, CHAIN["units"][2]]}
    body = post(http, "gradients", {"network": given, "samples": BATCH, "per_sample": True}).json()
    assert set(body["gradients"]["responses"]) == {"h", "o"}
    assert len(body["per_sample"]["responses"]["h"]) == 2
    # a response of 1 changes no value: the rest of the answer is the plain one's
    assert body["gradients"]["biases"] == plain.json()["gradients"]["biases"]
    assert body["gradients"]["weights"] == plain.json()["gradients"]["weights"]


@pytest.mark.parametrize(
    ("unit", "words"),
    [
        ({"id": "h", "activation": "tanh", "slope": 0.1}, "only leaky_relu takes"),
        ({"id": "h", "aggregation": "product"}, "aggregation"),
        ({"id": "h", "slope": "0.1", "activation": "leaky_relu"}, "slope"),
    ],
)
def test_unit_fields_that_do_not_fit_are_refused(
    http: httpx.Client, unit: dict[str, Any], words: str
) -> None:
    net = {**CHAIN, "units": [CHAIN["units"][0], unit, CHAIN["units"][2]]}
    answer = post(http, "forward", {"network": net, "samples": BATCH})
    assert answer.status_code == 422
    assert words in answer.text


def test_an_input_takes_no_response_or_aggregation(http: httpx.Client) -> None:
    for field, value in (("response", 2.0), ("aggregation", "mean"), ("slope", 0.1)):
        net = {**CHAIN, "units": [{"id": "x", "role": "input", field: value}, *CHAIN["units"][1:]]}
        answer = post(http, "forward", {"network": net, "samples": BATCH})
        assert answer.status_code == 422
        assert f"input unit 'x' takes no {field}" in answer.text


def test_check_takes_claimed_response_gradients(http: httpx.Client) -> None:
    given = {**CHAIN, "units": [CHAIN["units"][0], {**CHAIN["units"][1], "response": 0.8}, CHAIN["units"][2]]}
    right = post(http, "gradients", {"network": given, "samples": BATCH}).json()["gradients"]["responses"]
    claimed = {"responses": {"h": right["h"], "o": right["o"] * 1.01}}
    body = post(http, "check", {"network": given, "samples": BATCH, "gradients": claimed}).json()
    assert body["ok"] is False
    assert body["responses"]["h"]["ok"] is True
    assert body["responses"]["o"]["ok"] is False
    assert body["biases"] == {}
    refused = post(
        http, "check", {"network": CHAIN, "samples": BATCH, "gradients": {"responses": {"h": 0.1}}}
    )
    assert refused.status_code == 422
    assert "the network gives no unit a response" in refused.text


def test_render_labels_a_unit_with_its_own_slope(http: httpx.Client) -> None:
    net = {
        **CHAIN,
        "units": [
            CHAIN["units"][0],
            {"id": "h", "activation": "leaky_relu", "slope": 0.005},
            CHAIN["units"][2],
        ],
    }
    for fmt in ("svg", "dot"):
        answer = http.post(f"/v1/render?format={fmt}", json={"network": net})
        assert answer.status_code == 200, answer.text
        assert "leaky_relu(0.005)" in answer.text
    plain = http.post("/v1/render?format=dot", json={"network": CHAIN}).text
    assert "neat_tanh\\n" in plain or '\\nneat_tanh"' in plain
