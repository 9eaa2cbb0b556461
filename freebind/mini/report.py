"""Printing the role table (rich for terminals, Markdown for the README)."""

from __future__ import annotations

COLUMNS = ("a2t", "t2a", "i2t", "t2i", "a2i", "i2a", "p2t", "t2p", "p2i", "i2p", "paraphrase")
HEADERS = {"a2t": "a→t", "t2a": "t→a", "i2t": "i→t", "t2i": "t→i", "a2i": "a→i",
           "i2a": "i→a", "p2t": "p→t", "t2p": "t→p", "p2i": "p→i", "i2p": "i→p",
           "paraphrase": "para (acoustic)"}


PROBES = ("a:class", "a:loudness", "a:pitch", "a:rhythm", "i:class", "i:colour", "i:size",
          "i:texture")
PROBE_HEADERS = {"a:class": "a:cls", "a:loudness": "a:loud", "a:pitch": "a:pitch",
                 "a:rhythm": "a:rhy", "i:class": "i:cls", "i:colour": "i:col", "i:size": "i:size",
                 "i:texture": "i:tex"}
PROBE_CHANCE = {"a:class": 1 / 20, "a:loudness": 1 / 2, "a:pitch": 1 / 2, "a:rhythm": 1 / 3,
                "i:class": 1 / 20, "i:colour": 1 / 6, "i:size": 1 / 2, "i:texture": 1 / 3}


def _cell(values: dict, col: str) -> str:
    return f"{values[col]:.3f}" if col in values else "–"


def render_report(report: dict, console=None, show=None) -> None:
    """Print the report's tables on ``console``; ``show(table)`` prints one table (default
    ``console.print``)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    show = show or console.print
    t = Table(title=f"mini world roles: held-out R@1 ({report['items']} items, "
                    f"chance {report['chance']:.3f})")
    t.add_column("space", no_wrap=True)
    for c in COLUMNS:
        t.add_column(HEADERS[c], justify="right")
    for name, values in report["spaces"].items():
        t.add_row(name, *(_cell(values, c) for c in COLUMNS))
    show(t)
    if report.get("probes"):
        p = Table(title="zero-shot probes through each space's text tower (accuracy)")
        p.add_column("space", no_wrap=True)
        for c in PROBES:
            p.add_column(PROBE_HEADERS[c], justify="right")
        p.add_row("chance", *(f"{PROBE_CHANCE[c]:.2f}" for c in PROBES))
        for name, values in report["probes"].items():
            p.add_row(name, *(f"{values[c]:.2f}" if c in values else "–" for c in PROBES))
        show(p)
    if "conditions" in report:
        c = Table(title="role conditions")
        c.add_column("condition")
        c.add_column("measured")
        c.add_column("ok")
        for row in report["conditions"]:
            c.add_row(row["condition"], row["measured"], "yes" if row["ok"] else "NO")
        show(c)
    if report.get("timings_s"):
        console.print("timings (s): " + ", ".join(f"{k} {v}" for k, v in
                                                   report["timings_s"].items()))


def markdown(report: dict) -> str:
    lines = ["| space | " + " | ".join(HEADERS[c] for c in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for name, values in report["spaces"].items():
        lines.append(f"| `{name}` | " + " | ".join(_cell(values, c) for c in COLUMNS) + " |")
    if report.get("probes"):
        lines += ["", "| space | " + " | ".join(PROBES) + " |", "|---|" + "---:|" * len(PROBES),
                  "| chance | " + " | ".join(f"{PROBE_CHANCE[c]:.2f}" for c in PROBES) + " |"]
        for name, values in report["probes"].items():
            lines.append(f"| `{name}` | " + " | ".join(
                f"{values[c]:.2f}" if c in values else "–" for c in PROBES) + " |")
    if "conditions" in report:
        lines += ["", "| condition | measured | ok |", "|---|---|---|"]
        lines += [f"| {r['condition']} | {r['measured']} | {'yes' if r['ok'] else 'NO'} |"
                  for r in report["conditions"]]
    return "\n".join(lines)
