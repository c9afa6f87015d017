"""The playground's own modules, imported in a real browser: the LaTeX-to-MathML converter over
every activation's explain formula, and the data sets' shapes as TensorFlow Playground draws them."""

from __future__ import annotations

import httpx
import pytest

from tests.browser import CHROMIUM, NO_CHROMIUM, Opener, browser, open_page, ready

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")

pytestmark = pytest.mark.slow
__all__ = ["browser", "open_page"]


def test_every_activations_explain_formula_is_typeset_with_no_command_left_over(
    open_page: Opener, http: httpx.Client
) -> None:
    page, _ = open_page("/?example=chain")
    ready(page)
    formulas: list[str] = []
    for name in http.get("/v1/info").json()["activations"]:
        network = {
            "units": [
                {"id": "x", "role": "input"},
                {"id": "j_1", "activation": name},
                {"id": "o", "role": "output"},
            ],
            "weights": [
                {"source": "x", "target": "j_1", "value": 0.5},
                {"source": "j_1", "target": "o", "value": -0.3},
            ],
        }
        answer = http.post(
            "/v1/explain",
            json={"network": network, "samples": {"inputs": {"x": [[0.7]]}, "targets": {"o": [[0.2]]}}},
        )
        if answer.status_code == 200:
            formulas += [w["latex"] for w in answer.json()["weights"]]
    assert len(formulas) >= 2 * 10
    left = page.evaluate(
        """async formulas => {
             const { mathml } = await import('/playground/mathml.js');
             return formulas.flatMap(f => [...mathml(f).querySelectorAll('mtext, mi, mo')]
               .map(e => e.textContent).filter(t => t.includes('\\\\') || t === '{' || t === '}'));
           }""",
        formulas,
    )
    assert left == []


def test_the_data_sets_have_tensorflow_playgrounds_shapes(open_page: Opener) -> None:
    page, _ = open_page("/?example=chain")
    ready(page)
    shapes = page.evaluate(
        """async () => {
             const { generate } = await import('/playground/datasets.js');
             const { rng } = await import('/playground/util.js');
             const at = (name, seed, noise, testShare) =>
               generate(name, { random: rng(seed), noise, testShare, a: 'x1', b: 'x2', o: 'o' });
             const out = {};
             for (const name of ['circle', 'xor', 'gauss', 'spiral']) {
               const d = at(name, 7, 0, 0.5);
               const pick = s => s.inputs.x1.map((r, i) => [r[0], s.inputs.x2[i][0], s.targets.o[i][0]]);
               out[name] = [...pick(d.samples), ...pick(d.test)];
             }
             const text = (seed) => JSON.stringify(at('spiral', seed, 0.3, 0.2));
             const split = at('spiral', 7, 0.3, 0.2);
             out.seeded = [text(7) === text(7), text(7) === text(8),
                           split.samples.inputs.x1.length, split.test.inputs.x1.length];
             return out;
           }"""
    )
    assert shapes.pop("seeded") == [True, False, 400, 100]
    for name, points in shapes.items():
        assert len(points) == 500, name
        assert {p[2] for p in points} == {0, 1}, name
    # without noise: the circle's label is inside radius 2.5, xor's the sign of x*y (TensorFlow
    # Playground pads its points 0.3 off the axes), the spiral's points lie within radius 5
    assert all((x * x + y * y < 2.5**2) == (t == 1) for x, y, t in shapes["circle"])
    assert all(min(abs(x), abs(y)) >= 0.3 and (x * y >= 0) == (t == 1) for x, y, t in shapes["xor"])
    assert all(x * x + y * y <= 25 + 1e-9 for x, y, _ in shapes["spiral"])
    gauss = shapes["gauss"]
    for label, centre in ((1, 2.0), (0, -2.0)):
        xs = [x for x, _, t in gauss if t == label]
        assert abs(sum(xs) / len(xs) - centre) < 0.5
