// The seed's three cases and a few more; `?example=<name>` opens one.

const w = (source, target, value) => ({ source, target, value });
export const EXAMPLES = {
  // two inputs and a sigmoid output, no weights yet: a network to build by hand
  empty: {
    network: {
      units: [{ id: "x1", role: "input" }, { id: "x2", role: "input" }, { id: "o", role: "output", activation: "sigmoid" }],
      weights: [],
    },
    samples: { inputs: { x1: [[0], [0], [1], [1]], x2: [[0], [1], [0], [1]] }, targets: { o: [[0], [1], [1], [0]] } },
  },
  chain: {
    network: {
      units: [{ id: "x", role: "input" }, { id: "j" }, { id: "k" }, { id: "o", role: "output" }],
      weights: [w("x", "j", 0.5), w("j", "k", -0.3), w("k", "o", 0.8)],
    },
    samples: { inputs: { x: [[1.5]] }, targets: { o: [[0.25]] } },
  },
  two_inputs: {
    network: {
      units: [
        { id: "x1", role: "input" },
        { id: "x2", role: "input" },
        { id: "j", bias: 0.1 },
        { id: "o", role: "output" },
      ],
      weights: [w("x1", "j", 0.4), w("x2", "j", 0.9), w("j", "o", -1.3)],
    },
    samples: { inputs: { x1: [[0.7]], x2: [[-1.2]] }, targets: { o: [[1.0]] } },
  },
  fan_out: {
    network: {
      units: [
        { id: "x", role: "input" },
        { id: "j" },
        { id: "o1", role: "output" },
        { id: "o2", role: "output" },
      ],
      weights: [w("x", "j", 0.7), w("j", "o1", 1.2), w("j", "o2", -0.6)],
    },
    samples: { inputs: { x: [[0.8]] }, targets: { o1: [[0.5]], o2: [[0.1]] } },
  },
  two_outputs: {
    network: {
      units: [{ id: "x", role: "input" }, { id: "j" }, { id: "k1" }, { id: "k2" }, { id: "o", role: "output" }],
      weights: [w("x", "j", 0.6), w("j", "k1", 1.1), w("j", "k2", -0.7), w("k1", "o", 0.5), w("k2", "o", 1.4)],
    },
    samples: { inputs: { x: [[0.9]] }, targets: { o: [[-0.4]] } },
  },
  xor: {
    network: {
      units: [
        { id: "x1", role: "input" },
        { id: "x2", role: "input" },
        { id: "h1", activation: "tanh", bias: 0.1 },
        { id: "h2", activation: "tanh", bias: -0.2 },
        { id: "o", role: "output", activation: "sigmoid", bias: 0.05 },
      ],
      weights: [
        w("x1", "h1", 1.2),
        w("x2", "h1", -0.9),
        w("x1", "h2", -1.1),
        w("x2", "h2", 1.3),
        w("h1", "o", 0.8),
        w("h2", "o", 0.7),
      ],
    },
    samples: {
      inputs: { x1: [[0], [0], [1], [1]], x2: [[0], [1], [0], [1]] },
      targets: { o: [[0], [1], [1], [0]] },
    },
  },
};
