"""eval-depth's tables and reports: the console number formats, means, CSV, JSON and the
Markdown table with the published numbers beside ours."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from rollingdepth.io.video_io import atomic_path

__all__ = ["METRICS", "METRICS_BENCH", "fmt", "markdown", "mean_metrics", "pct", "summary_rows", "write_csv",
           "write_json"]

METRICS = ("abs_rel", "rmse", "delta1", "delta2", "delta3", "opw")
METRICS_BENCH = ("abs_rel", "delta1", "rmse", "delta2", "delta3", "opw", "tae")


def fmt(v: float) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.4f}"


def pct(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def summary_rows(method, dataset, split, mean, done, total, published) -> list[list]:
    rows = [[method, dataset, split, f"{done}/{total}", pct(mean.get("abs_rel")), pct(mean.get("delta1")),
             "-" if "opw" not in mean else f"{mean['opw']:.4f}", pct(mean.get("tae")), "this run"]]
    for variant, numbers in published.get("variants", {}).items():
        rows.append([f"{variant}, published", dataset, split, "", pct(numbers["abs_rel"]),
                     pct(numbers["delta1"]), "-", "-", published["source"]])
    return rows


def markdown(title, split, rows, videos, frames, failures, settings, published) -> str:
    lines = [f"# {title}, split {split}", "",
             "| method | sequences | AbsRel (%) ↓ | δ1 (%) ↑ | OPW ↓ | TAE (%) ↓ |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[3] or '-'} | {r[4]} | {r[5]} | {r[6]} | {r[7]} |")
    lines += ["", f"Valid ground truth: {settings['min_depth']:g} < depth < {settings['max_depth']:g} m; "
              f"one scale and shift per {'video' if settings['align'] == 'video' else settings['align']} "
              f"({'in depth' if settings['align'] == 'depth' else 'in disparity space'}); metrics averaged over "
              f"{settings['average']}, then over sequences. OPW in metres; see docs/evaluation.md."]
    if published:
        lines.append(f"Published: {published['source']}, Table 1 (\"fast\": dilations 1, 25, no refinement).")
    else:
        from rollingdepth.evaluation.datasets import published_splits

        splits = published_splits(settings["dataset"])
        if splits:
            lines.append(f"Published RollingDepth numbers are for split {' and '.join(splits)}; not shown for "
                         f"split {split}.")
        else:
            lines.append(f"The RollingDepth paper reports no numbers on {title}.")
    lines += ["", "## Per sequence", "", "| sequence | frames | AbsRel (%) | δ1 (%) | OPW | TAE (%) |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, m in videos.items():
        opw = "-" if "opw" not in m or not np.isfinite(m["opw"]) else f"{m['opw']:.4f}"
        lines.append(f"| {name} | {frames[name]} | {pct(m.get('abs_rel'))} | {pct(m.get('delta1'))} | {opw} | "
                     f"{pct(m.get('tae'))} |")
    for name, message in failures.items():
        lines.append(f"| {name} | - | failed: {message} | | | |")
    return "\n".join(lines) + "\n"


def mean_metrics(videos: dict, keys: list[str]) -> dict[str, float]:
    if not videos:
        return {}
    return {k: float(np.nanmean([m[k] for m in videos.values() if k in m])) for k in keys}


def write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
