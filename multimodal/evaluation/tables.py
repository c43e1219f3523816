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


NOTE_WIDTH = 24  # a text value longer than this (why a metric was not computed) is a note, not a cell


def format_table(metrics: Mapping[str, float | int | str]) -> str:
    """The metrics as an aligned two-column table, for logs and the command line. A value that
    is a sentence (why a metric was not computed) starts where the values do and runs on,
    without widening the column of numbers."""
    cells = [(str(name), f"{value:.4f}" if isinstance(value, float) else str(value)) for name, value in metrics.items()]
    notes = {name for name, cell in cells if len(cell) > NOTE_WIDTH}
    table = aligned_table(("metric", "value"), [(name, "" if name in notes else cell) for name, cell in cells])
    lines = table.split("\n")
    width = max(len(name) for name, _ in [("metric", ""), *cells])
    for i, (name, cell) in enumerate(cells, start=2):
        if name in notes:
            lines[i] = f"{name.ljust(width)}  {cell}"
    return "\n".join(lines)


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


# The parts of an evaluation timed per validation image; every other part (drawing pictures and
# judging them) is timed per picture drawn.
PER_VALIDATION_IMAGE = ("retrieval", "retrieval_reranked", "caption", "real_features")


def seconds_per_image(metrics: Mapping[str, float | int | str]) -> dict[str, float]:
    """Each timed part's seconds over the images it measured: validation images ("images") for
    retrieval, captions and the real images' features, pictures drawn ("prompts") for the rest."""
    per_image = {}
    for name, seconds in metrics.items():
        part = name.removeprefix("seconds/")
        if part == name or part == "total":
            continue
        count = metrics.get("images" if part in PER_VALIDATION_IMAGE else "prompts")
        if count:
            per_image[part] = seconds / count
    return per_image


def format_seconds_per_image(per_image: Mapping[str, float]) -> str:
    """`seconds_per_image` as an aligned table (milliseconds, to be read at a glance)."""
    rows = [(part, f"{1000 * value:.1f}") for part, value in per_image.items()]
    return aligned_table(("seconds per image", "ms"), rows)

