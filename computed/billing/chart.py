"""The hourly cost chart: cost per UTC hour, stacked by size, as a PNG (matplotlib, no
display needed).

Drawn with matplotlib's object-oriented API on a Figure of its own and the Agg canvas,
never through pyplot: pyplot keeps global state (the current figure, the backend, the
list of open figures) that request threads drawing at once would share."""

from __future__ import annotations

import io
from collections import defaultdict

from .metering import Report


def cost_chart_png(report: Report) -> bytes:
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    currencies = sorted(report.total()) or ["USD"]
    currency = currencies[0]
    hours = sorted({r.hour for r in report.rows if r.currency == currency})
    sizes = sorted({r.size for r in report.rows if r.currency == currency})
    cost = defaultdict(float)  # float only for drawing; the report's amounts stay Decimal
    for r in report.rows:
        if r.currency == currency:
            cost[(r.size, r.hour)] += float(r.cost)
    fig = Figure(figsize=(10, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bottom = [0.0] * len(hours)
    width = 1 / 24 * 0.9
    for size in sizes:
        values = [cost[(size, h)] for h in hours]
        ax.bar(hours, values, width=width, bottom=bottom, label=size, align="edge")
        bottom = [b + v for b, v in zip(bottom, values)]
    total = report.total().get(currency, 0)
    ax.set_title(f"Cost per hour, {report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC "
                 f"({report.policy} billing; total {total} {currency})", fontsize=10)
    ax.set_xlabel("hour (UTC)")
    ax.set_ylabel(f"cost ({currency})")
    ax.set_xlim(report.start, report.end)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    fig.autofmt_xdate()
    if sizes:
        ax.legend(title="size", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no usage in this period", transform=ax.transAxes, ha="center", va="center")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
