"""The metrics as aligned text tables, for logs and the command line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def check_targets(metrics: Mapping[str, float], targets: Mapping[str, float]) -> dict[str, bool]:
    """Whether each targeted metric reaches its lowest acceptable value."""
    return {name: metrics[name] >= goal for name, goal in targets.items()}


def aligned_table(header: Sequence[str], rows: Sequence[Sequence[str]], short_rule: bool = False) -> str:
    """`header` over a rule of dashes over `rows`, the first column aligned left and the others
    right, two spaces apart. The rule is as wide as each column, or (`short_rule`) as its header."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    rule = ["-" * (len(name) if short_rule else width) for name, width in zip(header, widths)]
    return "\n".join(
        "  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])])
        for row in (header, rule, *rows)
    )


def format_table(metrics: Mapping[str, float | int | str]) -> str:
    """The metrics as an aligned two-column table, for logs and the command line."""
    return aligned_table(("metric", "value"), [
        (str(name), f"{value:.4f}" if isinstance(value, float) else str(value)) for name, value in metrics.items()
    ])


def format_seen_unseen(metrics: Mapping[str, float | int | str]) -> str:
    """The metrics measured for kinds training saw and never saw, side by side with the whole
    split's: one row per metric, columns all / seen / unseen. Empty when there are none."""
    names = [name.removeprefix("unseen/") for name in metrics if name.startswith("unseen/")]
    if not names:
        return ""
    rows = []
    for name in names:
        cells = [metrics.get(key) for key in (name, f"seen/{name}", f"unseen/{name}")]
        rows.append((name, *("—" if value is None else f"{value:.4f}" for value in cells)))
    return aligned_table(("metric", "all", "seen", "unseen"), rows, short_rule=True)


def format_targets(metrics: Mapping[str, float], targets: Mapping[str, float]) -> str:
    """The targets as an aligned table (goal, value reached, met or not), below `format_table`'s."""
    met = check_targets(metrics, targets)
    rows = [
        (name, f">= {goal:.2f}", f"{metrics[name]:.4f}", "yes" if met[name] else "NO")
        for name, goal in targets.items()
    ]
    table = aligned_table(("target", "goal", "value", "met"), rows)
    return f"{table}\n{sum(met.values())} of {len(met)} targets met"
