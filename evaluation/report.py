"""How an evaluation shows itself: a progress bar, a table, a JSON report and a PNG plot."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm


def progress(total: int, description: str) -> tqdm[Any]:
    return tqdm(total=total, desc=description, unit="q", file=sys.stderr, leave=False,
                dynamic_ncols=True)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str = "") -> str:
    """Rows as an aligned text table (floats to 3 places)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return "" if value is None else str(value)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = [title] if title else []
    lines.append("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_json(out: Path, name: str, report: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def write_jsonl(out: Path, name: str, rows: Sequence[dict[str, Any]]) -> Path:
    """One JSON object a line: what was asked and what came back, to recompute any figure."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (7.0, 4.5)) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=size, squeeze=False)


def save(fig: Any, out: Path, name: str) -> Path:
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
