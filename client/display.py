"""How the SDK's answers show in Jupyter: a drawing as a picture, an explanation's formulas
typeset, a training's loss curve.

IPython asks an object for `_repr_svg_` or `_repr_html_`; these are the SDK's answers with
those methods added, and otherwise the same (a drawing is still its SVG text, a training
still an SgdResponse). Nothing is loaded from another host: the formulas are MathML (with
the `notebook` extra's latex2mathml; without it, their LaTeX as text) and the curve an SVG
drawn here.
"""

from __future__ import annotations

import html
import math

from service.wire import ExplainResponse, SgdResponse


class Svg(str):
    """A drawing from `render`: its SVG text, shown as a picture in a notebook."""

    __slots__ = ()

    def _repr_svg_(self) -> str:
        return str(self)


def mathml(latex: str) -> str:
    """LaTeX as MathML (display style), or as escaped text when latex2mathml is not installed."""
    try:
        from latex2mathml.converter import convert
    except ImportError:
        return f"<pre>{html.escape(latex)}</pre>"
    return str(convert(latex, display="block"))


class Explanation(ExplainResponse):
    """`explain`'s answer: in a notebook, each weight's gradient as a typeset formula."""

    def _repr_html_(self) -> str:
        rows = [
            f"<div><b>dE/dw {html.escape(w.source)} &rarr; {html.escape(w.target)}</b>{mathml(w.latex)}</div>"
            for w in self.weights
        ]
        return f"<div><p>sample {self.sample}, loss {self.loss:.6g}</p>{''.join(rows)}</div>"


def loss_curve(losses: list[float], width: int = 420, height: int = 180) -> str:
    """An SVG line of the losses (log scale when they span more than a decade), with its axes."""
    pad = 40
    positive = all(v > 0 for v in losses)
    log = positive and max(losses) > 10 * min(losses)
    ys = [math.log10(v) for v in losses] if log else list(losses)
    low, high = min(ys), max(ys)
    span = (high - low) or 1.0
    last = max(len(ys) - 1, 1)
    points = " ".join(
        f"{pad + (width - 2 * pad) * k / last:.1f},{height - pad - (height - 2 * pad) * (y - low) / span:.1f}"
        for k, y in enumerate(ys)
    )
    scale = " (log scale)" if log else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>'
        f'<text x="{pad}" y="{pad - 8}">loss{scale}: {losses[0]:.4g} &#8594; {losses[-1]:.4g}</text>'
        f'<text x="{width - pad}" y="{height - pad + 16}" text-anchor="end">epoch {len(losses) - 1}</text>'
        f'<text x="{pad}" y="{height - pad + 16}">0</text></svg>'
    )


class Training(SgdResponse):
    """`sgd`'s answer: in a notebook, its loss curve, from the loss before the first step
    through each epoch's."""

    def _repr_svg_(self) -> str:
        return loss_curve([self.loss_before, *(e.loss for e in self.history)])
