"""Printing the role table (rich for terminals, Markdown for the README)."""

from __future__ import annotations

COLUMNS = ("a2t", "t2a", "i2t", "t2i", "a2i", "i2a", "paraphrase")
HEADERS = {"a2t": "a→t", "t2a": "t→a", "i2t": "i→t", "t2i": "t→i", "a2i": "a→i",
           "i2a": "i→a", "paraphrase": "para (acoustic)"}


def _cell(values: dict, col: str) -> str:
    return f"{values[col]:.3f}" if col in values else "–"


def render_report(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    t = Table(title=f"mini world roles: held-out R@1 ({report['items']} items, "
                    f"chance {report['chance']:.3f})")
    t.add_column("space")
    for c in COLUMNS:
        t.add_column(HEADERS[c], justify="right")
    for name, values in report["spaces"].items():
        t.add_row(name, *(_cell(values, c) for c in COLUMNS))
    console.print(t)
    if "conditions" in report:
        c = Table(title="role conditions")
        c.add_column("condition")
        c.add_column("measured")
        c.add_column("ok")
        for row in report["conditions"]:
            c.add_row(row["condition"], row["measured"], "yes" if row["ok"] else "NO")
        console.print(c)
    if report.get("timings_s"):
        console.print("timings (s): " + ", ".join(f"{k} {v}" for k, v in
                                                   report["timings_s"].items()))


def markdown(report: dict) -> str:
    lines = ["| space | " + " | ".join(HEADERS[c] for c in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for name, values in report["spaces"].items():
        lines.append(f"| `{name}` | " + " | ".join(_cell(values, c) for c in COLUMNS) + " |")
    if "conditions" in report:
        lines += ["", "| condition | measured | ok |", "|---|---|---|"]
        lines += [f"| {r['condition']} | {r['measured']} | {'yes' if r['ok'] else 'NO'} |"
                  for r in report["conditions"]]
    return "\n".join(lines)
