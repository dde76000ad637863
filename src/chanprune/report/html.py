"""Render :class:`ReportData` as one self-contained HTML page (PNG plots embedded as base64).

Self-contained so the file can be mailed or attached to a CI run: no scripts or styles are
fetched. A few lines of inline script record whether the plots decoded (``data-plots`` on
``<body>``), which lets a headless-browser test check that they are really visible.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import platform

import torch

from ..deps import require
from ..plan import Plan
from .collect import METHODS, ReportData

COLORS = {
    "unpruned": "#444444",
    "constrained": "#9467bd",
    "baseline": "#d62728",
    "reorder": "#1f77b4",
    "ideal": "#2ca02c",
}

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.muted { color: #666; font-size: .9em; }
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.plot'), ok = 0;
  imgs.forEach(function (i) { if (i.complete && i.naturalWidth > 0) ok++; });
  document.body.setAttribute('data-plots', ok + '/' + imgs.length);
});
"""


def render(data: ReportData) -> str:
    """The HTML page."""
    e = html.escape
    shape = "x".join(str(s) for s in data.input_shape)
    masking = ", ".join(f"{k}={v}" for k, v in data.masking.items())
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>chanprune report: {e(data.model)}</title><style>{CSS}</style></head><body>",
        f"<h1>chanprune report: {e(data.model)}</h1>",
        f"<p class='muted'>input {shape}; masks: {e(masking)}; amounts {data.amounts}; "
        f"latency = median of {data.runs} interleaved rounds on CPU "
        f"({torch.get_num_threads()} threads, {e(platform.machine())}, torch "
        f"{e(torch.__version__)}); {datetime.datetime.now().isoformat(timespec='minutes')}</p>",
        "<h2>Latency vs pruning amount</h2>",
        "<p class='muted'><b>constrained</b>: coupled layers pruned together (no copies); "
        "<b>baseline</b>: unconstrained masks, original channel order, consumers gather their "
        "channels; <b>reorder</b>: the same masks, channel order solved so reads are slices "
        "(UPSCALE); <b>ideal</b>: reorder with every channel read a contiguous view, copying "
        "nothing (the limit for these layer sizes; its outputs are meaningless).</p>",
        _img(_latency_plot(data), "latency per method against the pruning amount"),
        _summary_table(data),
        f"<h2>Kept channels per layer (amount {data.detail_amount}, reorder export)</h2>",
        _img(_kept_plot(data), "channels kept per layer"),
        f"<h2>Segments and their copies (amount {data.detail_amount})</h2>",
        _segments_table(data.plans),
        *_accuracy_section(data),
        f"<script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts)


def _accuracy_section(data: ReportData) -> list[str]:
    """Top-1 against measured latency (``--targets``), if it was collected."""
    view = data.accuracy
    if view is None:
        return []
    rows = [
        "<table><tr><th>latency target</th><th class='l'>masks</th><th>measured ratio</th>"
        "<th>top-1 (%)</th><th class='l'>note</th></tr>",
        f"<tr><td>1</td><td class='l'>unpruned</td><td>1.000</td>"
        f"<td>{view.unpruned_top1:.2f}</td><td class='l'></td></tr>",
    ]
    for pt in view.points:
        ratio = "-" if pt.ratio is None else f"{pt.ratio:.3f}"
        top1 = "-" if pt.top1 is None else f"{pt.top1:.2f}"
        rows.append(
            f"<tr><td>{pt.target:g}</td><td class='l'>{html.escape(pt.contender)}</td>"
            f"<td>{ratio}</td><td>{top1}</td><td class='l'>{html.escape(pt.note)}</td></tr>"
        )
    rows.append("</table>")
    return [
        "<h2>Top-1 vs measured latency</h2>",
        f"<p class='muted'>At each latency target the model is masked from its original "
        f"weights by each contender, its export measured against the unpruned model "
        f"({html.escape(view.backend)}, paired rounds), BatchNorm recalibrated on "
        f"{view.calibration_images} training images and scored on {view.images} "
        f"{html.escape(view.dataset)} images. The default masks for a target are mixed masks "
        "with Taylor scores (scored on the same calibration images).</p>",
        _img(_accuracy_plot(data), "top-1 against measured latency per contender"),
        "".join(rows),
    ]


def _accuracy_plot(data: ReportData) -> bytes:
    plt = _pyplot()
    view = data.accuracy
    assert view is not None
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for label in dict.fromkeys(pt.contender for pt in view.points):
        pts = sorted(
            (pt.ratio, pt.top1)
            for pt in view.points
            if pt.contender == label and pt.ratio is not None and pt.top1 is not None
        )
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", lw=2, label=label)
    ax.axhline(view.unpruned_top1, color=COLORS["unpruned"], ls="--", lw=1.5, label="unpruned")
    ax.set_xlabel("measured latency / unpruned")
    ax.set_ylabel("top-1 after recalibration (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(f"{data.model}: top-1 vs latency")
    return _png(fig)


def _img(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f"<p><img class='plot' alt='{html.escape(alt)}' src='data:image/png;base64,{b64}'></p>"


def _summary_table(data: ReportData) -> str:
    rows = ["<table><tr><th class='l'>amount</th>"]
    rows += [f"<th>{m} ms</th>" for m in METHODS]
    rows += ["<th>baseline / reorder</th><th>reorder params</th><th>reorder MACs</th></tr>"]
    for i, a in enumerate(data.amounts):
        lat = {m: data.latency[m][i] for m in METHODS}
        cells = "".join(f"<td>{lat[m]:.2f}</td>" for m in METHODS)
        rows.append(
            f"<tr><td class='l'>{a}</td>{cells}<td>{lat['baseline'] / lat['reorder']:.3f}</td>"
            f"<td>{data.params['reorder'][i]:,}</td><td>{data.macs['reorder'][i]:,}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _segments_table(plans: dict[str, Plan]) -> str:
    if not plans:
        return "<p>no plan</p>"
    base, reorder = plans["baseline"], plans["reorder"]
    head = (
        "<table><tr><th>segment</th><th>channels</th><th>kept</th><th>readers</th>"
        "<th>copies baseline</th><th>copies reorder</th><th>bytes/sample baseline</th>"
        "<th>bytes/sample reorder</th><th class='l'>reorder order</th></tr>"
    )
    rows = [
        f"<p>{sum(s.gathers for s in base.segments)} copies ({base.copied_bytes:,} bytes per "
        f"sample) in the baseline export; {sum(s.gathers for s in reorder.segments)} "
        f"({reorder.copied_bytes:,} bytes) after reordering. Segments with readers or copies:</p>",
        head,
    ]
    for b, r in zip(base.segments, reorder.segments, strict=True):
        if not (b.consumers or b.gathers or r.gathers):
            continue
        proof = "" if r.optimal is None else ("proven optimal" if r.optimal else "heuristic")
        rows.append(
            f"<tr><td>{b.index}</td><td>{b.channels}</td><td>{b.kept}</td><td>{b.consumers}</td>"
            f"<td>{b.gathers}</td><td>{r.gathers}</td><td>{b.copied_bytes:,}</td>"
            f"<td>{r.copied_bytes:,}</td><td class='l'>{proof}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _png(fig) -> bytes:
    """The figure laid out and saved as PNG bytes; the figure is closed."""
    try:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()
    finally:
        _pyplot().close(fig)


def _pyplot():
    matplotlib = require("matplotlib", "chanprune report")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _latency_plot(data: ReportData) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    xs = [100 * a for a in data.amounts]
    for m in METHODS:
        style = dict(color=COLORS[m], label=m, marker="o", lw=2)
        if m == "unpruned":
            style.update(ls="--", marker=None, lw=1.5)
        ax.plot(xs, data.latency[m], **style)
    ax.set_xlabel("pruning amount (% of channels)")
    ax.set_ylabel("latency (ms, median)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(ncol=5, fontsize=9, loc="lower left")
    ax.set_title(f"{data.model}, input {'x'.join(map(str, data.input_shape))}")
    return _png(fig)


def _kept_plot(data: ReportData) -> bytes:
    plt = _pyplot()
    layers = data.layers
    fig, axes = plt.subplots(2, 1, figsize=(11, 5.6), sharex=True)
    idx = list(range(len(layers)))
    for ax, side in zip(axes, ("out", "in"), strict=True):
        total = [getattr(la, f"{side}_total") for la in layers]
        kept = [getattr(la, f"{side}_kept") for la in layers]
        ax.bar(idx, total, color="#dddddd", width=0.85, label="original")
        ax.bar(idx, kept, color=COLORS["reorder"], width=0.85, label="kept")
        ax.set_ylabel(f"{side}put channels")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=9, loc="upper left")
    step = max(1, len(layers) // 40)
    axes[1].set_xticks(idx[::step])
    axes[1].set_xticklabels([layers[i].name for i in idx[::step]], rotation=90, fontsize=7)
    return _png(fig)
