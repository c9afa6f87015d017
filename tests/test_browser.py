"""The playground and the docs in a real browser: Debian's chromium, driven by Playwright.

Every request to another host is aborted and fails the test, and so does any console error:
the pages must work with no network but the service's own (tests/browser.py).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests import seed
from tests.browser import (  # the fixtures browser, open_page and keyed_url are used by name
    CHROMIUM,
    KEY,
    NO_CHROMIUM,
    UNAUTHORISED,
    Opener,
    browser,
    keyed_url,
    open_page,
    ready,
    shot,
)
from tests.drawings import neat_like

if CHROMIUM is None:
    pytest.skip(NO_CHROMIUM, allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")

pytestmark = pytest.mark.slow
__all__ = ["browser", "keyed_url", "open_page"]


def shown_gradients(page: Any) -> list[float]:
    cells = page.locator("#weights-table td.grad")
    return [float(cells.nth(i).get_attribute("data-value")) for i in range(cells.count())]


def api(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = http.post(path, json=body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def body_of(case: seed.Case) -> dict[str, Any]:
    return {"network": case.network, "samples": case.samples}


def gradients_of(http: httpx.Client, network: dict[str, Any], samples: dict[str, Any]) -> list[float]:
    body = api(http, "/v1/gradients", {"network": network, "samples": samples})
    return [w["value"] for w in body["gradients"]["weights"]]


def wait_for_change(page: Any, selector: str, attribute: str, old: str | None) -> None:
    page.wait_for_function(
        "([s, a, old]) => { const e = document.querySelector(s); return e && e.getAttribute(a) !== old; }",
        arg=[selector, attribute, old],
    )


def test_the_chain_shows_the_apis_gradients_and_explains_a_clicked_edge(
    open_page: Opener, http: httpx.Client
) -> None:
    page, _ = open_page("/?example=chain")
    ready(page)
    case = seed.chain()
    # the page shows what the API answers, to the last bit, and that is the seed's closed form
    assert shown_gradients(page) == gradients_of(http, case.network, case.samples)
    assert shown_gradients(page) == pytest.approx(case.weight_gradients, rel=1e-12)
    for uid, delta in case.deltas.items():
        cell = page.locator(f'#units-table td[data-unit="{uid}"][data-q="delta"]')
        assert float(cell.get_attribute("data-value")) == pytest.approx(delta, rel=1e-12)
    assert page.locator("#graph g.unit").count() == 4
    assert page.locator("#graph g.edge").count() == 3
    # the picture is the service's layout answer, drawn: its boxes, routes and labels
    drawn = api(http, "/v1/render?format=layout", {**body_of(case), "show": "gradients"})
    assert page.locator('#graph svg[data-show="gradients"][data-orient="horizontal"]').count() == 1
    for unit in drawn["units"]:
        rect = page.locator(f'#graph g.unit[data-unit="{unit["id"]}"] rect')
        assert float(rect.get_attribute("x")) == unit["x"] - unit["width"] / 2
        assert float(rect.get_attribute("y")) == unit["y"] - unit["height"] / 2
    paths = page.locator("#graph g.edge path.line").evaluate_all("ps => ps.map(p => p.getAttribute('d'))")
    assert paths == [e["path"] for e in drawn["edges"]]
    labels = page.locator("#graph g.edge-label text").all_text_contents()
    assert labels == [e["label"]["text"] for e in drawn["edges"]]
    # and its labels are the gradients the table shows, to their three digits
    assert [float(t) for t in labels] == pytest.approx(shown_gradients(page), rel=5e-3)

    # showing the weights asks the service for the layout once more, and draws that
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/render" in r.url else None)
    page.get_by_label("weights", exact=True).check()
    page.wait_for_selector('#graph svg[data-show="weights"]')
    assert [urlsplit(u).path + "?" + urlsplit(u).query for u in asked] == [
        "/v1/render?format=layout&orient=horizontal"
    ]
    assert page.locator("#graph g.edge-label text").all_text_contents() == ["0.5", "-0.3", "0.8"]
    page.get_by_label("gradients", exact=True).check()
    page.wait_for_selector('#graph svg[data-show="gradients"]')
    assert len(asked) == 2

    # a click on the line of j -> k itself, where the browser draws it
    x, y = page.evaluate(
        """() => { const e = '#graph g.edge[data-source="j"][data-target="k"] path.line';
                   const p = document.querySelector(e);
                   const q = p.getPointAtLength(p.getTotalLength() * 0.3);
                   const m = p.getScreenCTM(); return [q.x * m.a + m.e, q.y * m.d + m.f]; }"""
    )
    page.mouse.click(x, y)
    # (an explanation shown before the click's answer arrives is another weight's: wait for this one)
    page.wait_for_selector('#explain-gradient[data-weight="j -> k"]')
    page.wait_for_selector("#explain-paths li")
    explained = api(http, "/v1/explain", {"network": case.network, "samples": case.samples})["weights"][1]
    assert page.locator("#explain-gradient").get_attribute("data-weight") == "j -> k"
    (path,) = explained["paths"]
    item = page.locator("#explain-paths li")
    assert item.count() == 1
    assert float(item.get_attribute("data-value")) == path["value"]
    factors = item.locator(".factor")
    assert [factors.nth(i).get_attribute("data-name") for i in range(factors.count())] == [
        f["name"] for f in path["factors"]
    ]
    assert [float(factors.nth(i).get_attribute("data-value")) for i in range(factors.count())] == [
        f["value"] for f in path["factors"]
    ]
    assert float(page.locator("#explain-sum").get_attribute("data-value")) == pytest.approx(
        case.weight_gradients[1], rel=1e-12
    )
    assert page.locator("pre.latex").text_content() == explained["latex"]
    assert page.get_by_role("button", name="Copy LaTeX").get_attribute("data-latex") == explained["latex"]
    shot(page, "playground-chain")


def test_a_unit_with_two_outputs_lists_both_paths(open_page: Opener) -> None:
    page, _ = open_page("/?example=two_outputs")
    ready(page)
    page.locator('#graph g.edge-label[data-source="x"][data-target="j"]').click()
    page.wait_for_selector("#explain-paths li")
    values = [
        float(v) for v in page.locator("#explain-paths li").evaluate_all("ls => ls.map(l => l.dataset.value)")
    ]
    assert values == pytest.approx(list(seed.two_outputs().paths), rel=1e-12)
    # from the keyboard: focus an edge, press Enter
    page.locator('#graph g.edge[data-source="j"][data-target="k2"]').focus()
    page.keyboard.press("Enter")
    page.wait_for_selector('#explain-gradient[data-weight="j -> k2"]')
    gradient = float(page.locator("#explain-gradient").get_attribute("data-value"))
    assert gradient == pytest.approx(seed.two_outputs().weight_gradients[2], rel=1e-12)


def test_editing_a_weight_and_a_target_recomputes(open_page: Opener, http: httpx.Client) -> None:
    page, _ = open_page("/?example=chain")
    ready(page)
    before = page.locator("#weights-table td.grad").first.get_attribute("data-value")
    page.get_by_label("weight x -> j", exact=True).fill("0.9")
    wait_for_change(page, "#weights-table td.grad", "data-value", before)
    case = seed.chain(w_xj=0.9)
    assert shown_gradients(page) == gradients_of(http, case.network, case.samples)
    assert shown_gradients(page) == pytest.approx(case.weight_gradients, rel=1e-12)

    before = page.locator("#weights-table td.grad").first.get_attribute("data-value")
    page.get_by_label("target o, sample 1", exact=True).fill("-1")
    wait_for_change(page, "#weights-table td.grad", "data-value", before)
    assert shown_gradients(page) == pytest.approx(seed.chain(w_xj=0.9, y=-1).weight_gradients, rel=1e-12)

    # a bias: the chain's units have none, so the API's own answer is the reference
    before = page.locator("#weights-table td.grad").first.get_attribute("data-value")
    page.get_by_label("bias of k", exact=True).fill("0.25")
    wait_for_change(page, "#weights-table td.grad", "data-value", before)
    network = seed.chain(w_xj=0.9, y=-1).network
    network["units"][2]["bias"] = 0.25
    assert shown_gradients(page) == gradients_of(http, network, seed.chain(y=-1).samples)


def losses(page: Any) -> list[float]:
    result: list[float] = json.loads(page.locator("#loss-curve").get_attribute("data-losses"))
    return result


def steps(page: Any) -> int:
    return int(page.locator("#train-status").get_attribute("data-steps"))


def test_training_steps_lower_the_loss_and_reset_restores_the_weights(
    open_page: Opener, http: httpx.Client
) -> None:
    page, _ = open_page("/?example=chain")
    ready(page)
    page.get_by_label("Learning rate", exact=True).fill("0.5")
    page.get_by_label("Epochs per step", exact=True).fill("1")
    for n in range(1, 4):
        page.get_by_role("button", name="Step").click()
        page.wait_for_selector(f'#train-status[data-steps="{n}"]')
    curve = losses(page)
    assert len(curve) == 4
    assert all(b < a for a, b in itertools.pairwise(curve)), curve
    case = seed.chain()
    first = api(
        http, "/v1/sgd", {"network": case.network, "samples": case.samples, "learning_rate": 0.5, "epochs": 1}
    )
    assert curve[:2] == [first["loss_before"], first["loss_after"]]

    # Play streams its trainings: the curve grows from their progress events as they come
    streams: list[str] = []
    page.on(
        "request",
        lambda r: (
            streams.append(r.headers.get("accept", ""))
            if r.url.endswith("/v1/sgd") and r.method == "POST"
            else None
        ),
    )
    page.get_by_label("Epochs per step", exact=True).fill("50")
    page.get_by_role("button", name="Play").click()
    page.wait_for_function("() => Number(document.querySelector('#train-status').dataset.steps) >= 100")
    page.get_by_role("button", name="Pause").click()
    page.wait_for_selector("#pause:disabled")
    stopped = steps(page)
    page.wait_for_timeout(500)
    assert steps(page) == stopped
    curve = losses(page)
    streamed = int(page.locator("#loss-curve").get_attribute("data-streamed"))
    assert streams
    assert set(streams) == {"text/event-stream"}
    assert streamed >= 2 * len(streams)  # each training's first and last epochs at least
    assert len(curve) == 4 + streamed  # before, the three steps, then one point an event
    assert all(b <= a for a, b in itertools.pairwise(curve)), curve
    assert curve[-1] < curve[0]
    assert page.locator("#loss-curve polyline").count() == 1
    assert page.get_by_label("weight x -> j", exact=True).input_value() != "0.5"
    shot(page, "playground-trained")

    page.get_by_role("button", name="Reset").click()
    page.wait_for_selector('#train-status[data-steps="0"]')
    page.wait_for_function(
        "() => document.querySelector('#loss-curve').dataset.losses.split(',').length === 1"
    )
    assert page.get_by_label("weight x -> j", exact=True).input_value() == "0.5"
    assert shown_gradients(page) == pytest.approx(case.weight_gradients, rel=1e-12)


def test_checking_the_shown_gradients_passes_and_a_wrong_one_fails(
    open_page: Opener, http: httpx.Client
) -> None:
    page, _ = open_page("/?example=chain")
    ready(page)
    page.get_by_role("button", name="Check the shown gradients").click()
    page.wait_for_selector('#check-summary[data-ok="true"]')
    assert page.locator("#check-table td.result").all_inner_texts() == ["pass", "pass", "pass"]

    right = gradients_of(http, seed.chain().network, seed.chain().samples)[0]
    page.get_by_label("your gradient for x -> j", exact=True).fill(repr(right))
    page.get_by_label("your gradient for j -> k", exact=True).fill("0.5")  # a wrong derivation
    page.get_by_role("button", name="Check my gradients").click()
    page.wait_for_selector('#check-summary[data-ok="false"]')
    assert page.locator("#check-table td.result").all_inner_texts() == ["pass", "fail", "not checked"]


def test_two_inputs_and_one_output_get_a_heatmap_from_one_forward(open_page: Opener) -> None:
    page, _ = open_page("/?example=chain")
    ready(page)
    assert page.locator("#heatmap-panel").is_hidden()
    forwards: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: forwards.append(json.loads(r.post_data)) if r.url.endswith("/v1/forward") else None,
    )
    page.get_by_label("Example", exact=True).select_option("xor")
    page.wait_for_selector('#heatmap[data-points="4096"]')
    assert page.locator("#heatmap-panel").is_visible()
    assert page.url.endswith("?example=xor")
    assert len(forwards) == 1
    assert {k: len(v) for k, v in forwards[0]["samples"]["inputs"].items()} == {"x1": 4096, "x2": 4096}
    colours = page.evaluate(
        """() => { const c = document.querySelector('#heatmap');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   const seen = new Set();
                   for (let i = 0; i < d.length; i += 4) seen.add(`${d[i]},${d[i + 1]},${d[i + 2]}`);
                   return seen.size; }"""
    )
    assert colours > 50  # a picture of the output, not a flat colour
    shot(page, "playground-xor")


GEOMETRY = """() => {
  const svg = document.querySelector('#graph svg');
  const units = [...svg.querySelectorAll('g.unit')].map(g => {
    const r = g.querySelector('rect');
    return {id: g.dataset.unit, x: +r.getAttribute('x'), y: +r.getAttribute('y'),
            w: +r.getAttribute('width'), h: +r.getAttribute('height')};
  });
  const behind = [];
  for (const g of svg.querySelectorAll('g.edge')) {
    const p = g.querySelector('path.line');
    const n = p.getTotalLength();
    for (let i = 0; i <= 400; i++) {
      const q = p.getPointAtLength(n * i / 400);
      for (const u of units) {
        if (u.id === g.dataset.source || u.id === g.dataset.target) continue;
        if (q.x > u.x && q.x < u.x + u.w && q.y > u.y && q.y < u.y + u.h)
          behind.push(`${g.dataset.source} -> ${g.dataset.target} behind ${u.id}`);
      }
    }
  }
  const boxes = [...svg.querySelectorAll('g.edge-label text'), ...svg.querySelectorAll('g.unit')]
    .map(e => [e.textContent, e.getBBox()]);
  const overlaps = [];
  for (let a = 0; a < boxes.length; a++) for (let b = a + 1; b < boxes.length; b++) {
    const [A, B] = [boxes[a][1], boxes[b][1]];
    if (A.x < B.x + B.width && B.x < A.x + A.width && A.y < B.y + B.height && B.y < A.y + A.height)
      overlaps.push(`${boxes[a][0]} / ${boxes[b][0]}`);
  }
  return {behind: [...new Set(behind)], overlaps, edges: svg.querySelectorAll('g.edge').length};
}"""


def test_a_pasted_neat_like_network_is_drawn_with_no_edge_behind_a_unit_and_no_overlaps(
    open_page: Opener, tmp_path: Path
) -> None:
    page, watch = open_page("/?example=chain")
    ready(page)
    doc = neat_like()
    page.get_by_label("network and samples as JSON", exact=True).fill(json.dumps(doc))
    page.get_by_role("button", name="Load this JSON").click()
    page.wait_for_selector('#graph g.unit[data-unit="h11"]')
    page.wait_for_selector("#weights-table td.grad[data-value]")
    for show in ["weights", "gradients"]:
        page.get_by_label(show, exact=True).check()
        page.wait_for_selector(f'#graph svg[data-show="{show}"]')
        geometry = page.evaluate(GEOMETRY)
        assert geometry["edges"] == len(doc["network"]["weights"])
        assert geometry["behind"] == []
        assert geometry["overlaps"] == []
    shot(page, "playground-neat-like")

    # export, then import the exported file: the same network comes back
    with page.expect_download() as download:
        page.get_by_role("button", name="Export").click()
    exported = tmp_path / "exported.json"
    download.value.save_as(exported)
    assert json.loads(exported.read_text())["network"]["weights"] == doc["network"]["weights"]
    with page.expect_download() as picture:
        page.get_by_role("button", name="Download the picture").click()
    svg = tmp_path / "picture.svg"
    picture.value.save_as(svg)
    assert svg.read_text().startswith("<svg")
    assert 'data-id="h11"' in svg.read_text()
    page.get_by_label("Example", exact=True).select_option("chain")
    page.wait_for_selector('#graph g.unit[data-unit="h11"]', state="detached")
    page.get_by_label("Import a file", exact=True).set_input_files(exported)
    page.wait_for_selector('#graph g.unit[data-unit="h11"]')

    # an invalid network: the API's problem detail is shown
    watch.allowed.append("the server responded with a status of 422")
    cyclic = neat_like()
    cyclic["network"]["weights"].append({"source": "h11", "target": "h0", "value": 1.0})
    page.get_by_label("network and samples as JSON", exact=True).fill(json.dumps(cyclic))
    page.get_by_role("button", name="Load this JSON").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert re.search(r"422 .*cycle", alert.inner_text())
    # the refused network is not taken: the page and its Example menu still show the imported one
    assert page.get_by_label("Example", exact=True).input_value() == "custom"
    assert page.locator('#graph g.unit[data-unit="h11"]').count() == 1


def test_with_an_api_key_the_page_says_so_then_works_once_it_is_typed(
    open_page: Opener, keyed_url: str
) -> None:
    page, watch = open_page("/?example=chain", base=keyed_url)
    watch.allowed.append(UNAUTHORISED)
    page.wait_for_selector("body[data-ready]")
    alert = page.get_by_role("alert")
    assert "401" in alert.inner_text()
    assert "needs an API key" in alert.inner_text()
    assert "Authorization" not in alert.inner_text()  # the student's part is the field, not a header
    alert.get_by_role("button", name="Go to the API key field").click()
    assert page.evaluate("() => document.activeElement.id") == "api-key"
    page.get_by_label("API key", exact=True).fill(KEY)
    page.get_by_label("API key", exact=True).press("Tab")  # a change event, as a person leaving the field
    page.wait_for_selector("#weights-table td.grad[data-value]")
    assert alert.is_hidden()
    assert shown_gradients(page) == pytest.approx(seed.chain().weight_gradients, rel=1e-12)

    docs, _ = open_page("/docs", base=keyed_url)
    docs.wait_for_selector(".swagger-ui .info .title")
    assert docs.locator("button.authorize").is_visible()


def test_docs_and_redoc_work_with_no_other_host(open_page: Opener) -> None:
    docs, _ = open_page("/docs")
    docs.wait_for_selector(".swagger-ui .info .title")
    assert "gradserve" in docs.locator(".swagger-ui .info .title").inner_text()
    docs.wait_for_selector('.opblock-summary-path[data-path="/v1/gradients"]')
    shot(docs, "docs")
    redoc, _ = open_page("/redoc")
    redoc.wait_for_selector("h1:has-text('gradserve')")
    redoc.get_by_text("/v1/gradients").first.wait_for()
    redoc.wait_for_timeout(300)  # the sidebar's images load after the first paint
    shot(redoc, "redoc")


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_a_page_framed_even_by_its_own_server_is_refused(open_page: Opener, path: str) -> None:
    """frame-ancestors 'none' (GRADSERVE_FRAME_ANCESTORS): no site can put the pages under a
    click-jacking overlay. The page works on its own under its policy (no console error: the
    fixture fails on any, CSP violations included), and framed it is refused."""
    page, watch = open_page("/healthz")  # an answer without a policy of its own, to frame from
    own = page.context.new_page()
    answer = own.goto(page.url.replace("/healthz", path))
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    own.wait_for_load_state("load")
    watch.allowed.append("frame-ancestors 'none'")
    with page.expect_console_message(lambda m: "frame-ancestors 'none'" in m.text):
        page.evaluate(f"document.body.innerHTML = '<iframe src=\"{path}\" width=800 height=600></iframe>'")
    (framed,) = page.main_frame.child_frames
    framed.wait_for_url("chrome-error://**")  # refused: Chromium's error page in its place


def test_on_a_phone_the_layers_run_top_to_bottom_and_nothing_scrolls_sideways(open_page: Opener) -> None:
    page, _ = open_page("/?example=two_outputs", width=390, height=844)
    ready(page)
    page.wait_for_selector('#graph svg[data-orient="vertical"]')  # the service's layout, top to bottom
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    graph = page.locator("#graph")
    assert (
        page.evaluate("() => document.querySelector('#graph svg').getBBox().width")
        <= graph.bounding_box()["width"]
    )
    geometry = page.evaluate(GEOMETRY)
    assert geometry["behind"] == []
    assert geometry["overlaps"] == []
    units = {u: page.locator(f'#graph g.unit[data-unit="{u}"] rect') for u in ["x", "j", "k1", "o"]}
    tops = {u: float(r.get_attribute("y")) for u, r in units.items()}
    assert tops["x"] < tops["j"] < tops["k1"] < tops["o"]
    shot(page, "playground-phone", full=False)
