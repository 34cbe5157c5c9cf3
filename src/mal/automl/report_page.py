"""The report page of a study, as markdown and as HTML from the same sections: a summary (baseline, best, final
evaluation and how they compare), how to reproduce the best training, the figures, and one row per trial.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


def sections(
    result: Mapping[str, Any], importance: Mapping[str, float], method: str, command: str | None
) -> dict[str, Any]:
    metric = result.get("metric") or "metric"
    baseline, final, best, progress = (
        result["baseline"],
        result["final_evaluation"],
        result["best"],
        result["progress"],
    )
    summary = [
        ("study", result.get("workspace") or f"{result.get('study')} in {result.get('storage')}"),
        ("algorithm", progress["algorithm"]),
        ("phase", result["phase"] + (f" ({result['stopped_reason']})" if result["stopped_reason"] else "")),
        ("trials", _trials_text(progress)),
        (f"baseline {metric}", f"{_fmt(baseline.get('metric_value'))} ({baseline['status']})"),
        (f"best {metric}", f"{_fmt(best['metric_value'])} ({best['job_id'] or 'none'})"),
        ("best vs baseline", _delta_text(baseline.get("comparison_to_best"))),
        ("final evaluation", f"{_fmt(final.get('metric_value'))} ({final['status']}: {final.get('reason', '')})"),
        ("final vs baseline", _delta_text(final.get("comparison_to_baseline"))),
        ("best checkpoint", best["checkpoint"] or "-"),
    ]
    names = sorted({name for h in result["history"] for name in h["params"]})
    workers = any("worker" in h["info"] for h in result["history"])
    rows = [
        [
            "baseline",
            "-",
            _fmt(baseline.get("budget")),
            _fmt(baseline.get("metric_value")),
            baseline["status"],
            *["default"] * len(names),
            *(["-"] if workers else []),
            baseline.get("reason") or "",
        ]
    ]
    for h in result["history"]:
        label = h["job_id"] + (" (best)" if h["job_id"] == best["job_id"] else "")
        note = h["failure_reason"] or "; ".join(f"{a['key']} {a['from']} -> {a['to']}" for a in h["adjustments"])
        if not note and h.get("retry_of") is not None:
            note = f"retry of trial {h['retry_of']}"
        rows.append(
            [
                label,
                str(h["info"].get("rung", "-")),
                _fmt(h["budget"]),
                _fmt(h["metric"]),
                h["status"],
                *[_fmt(h["params"].get(n)) for n in names],
                *([str(h["info"].get("worker", "-"))] if workers else []),
                note or "",
            ]
        )
    return {
        "summary": summary,
        "columns": ["trial", "rung", "budget", metric, "status", *names, *(["worker"] if workers else []), "note"],
        "rows": rows,
        "importance": importance,
        "method": method,
        "command": command,
    }


def _trials_text(progress: Mapping[str, Any]) -> str:
    text = f"{progress['completed']}/{progress['total']} trials finished, {progress['failed']} failed"
    extras = [
        f"{progress[key]} {label}"
        for key, label in (("pruned", "pruned"), ("retried", "retries of dead workers' trials"),
                           ("running", "running"))
        if progress.get(key)
    ]  # fmt: skip
    if progress.get("workers"):
        extras.append(f"by {len(progress['workers'])} worker(s)")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _delta_text(comparison: Mapping[str, Any] | None) -> str:
    if not comparison:
        return "-"
    relative = comparison.get("relative")
    rel = f" ({relative:+.1%})" if relative is not None else ""
    return f"{comparison['delta']:+.4f}{rel}, " + ("better" if comparison["improved"] else "not better")


def markdown(result: Mapping[str, Any], sections: Mapping[str, Any]) -> str:
    lines = ["# AutoML report", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in sections["summary"]]
    lines += ["", "## Reproduce the best training", ""]
    lines += [f"```\n{sections['command']}\n```" if sections["command"] else "No trial finished with a metric."]
    lines += [
        "",
        "## Optimisation history",
        "",
        "![optimisation history](optimisation_history.png)",
        "",
        "## Parameter importance",
        "",
        f"Method: {sections['method']}.",
        "",
    ]
    lines += [
        f"- `{name}`: {value:.3f}" for name, value in sorted(sections["importance"].items(), key=lambda kv: -kv[1])
    ]
    lines += [
        "",
        "![parameter importance](parameter_importance.png)",
        "",
        "## Learning curves",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "## Baseline, every trial, best",
        "",
        "| " + " | ".join(sections["columns"]) + " |",
        "|" + "---|" * len(sections["columns"]),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in sections["rows"]]
    return "\n".join(lines) + "\n"


def page_html(result: Mapping[str, Any], sections: Mapping[str, Any]) -> str:
    esc = html.escape
    summary = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in sections["summary"])
    head = "".join(f"<th>{esc(c)}</th>" for c in sections["columns"])
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in sections["rows"])
    importance = "".join(
        f"<li><code>{esc(n)}</code>: {v:.3f}</li>"
        for n, v in sorted(sections["importance"].items(), key=lambda kv: -kv[1])
    )
    command = f"<pre>{esc(sections['command'])}</pre>" if sections["command"] else "<p>No trial finished.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AutoML report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>AutoML report</h1><table>{summary}</table>
<h2>Reproduce the best training</h2>{command}
<h2>Optimisation history</h2><img src="optimisation_history.png" alt="optimisation history">
<h2>Parameter importance</h2><p>Method: {esc(sections["method"])}.</p><ul>{importance}</ul>
<img src="parameter_importance.png" alt="parameter importance">
<h2>Learning curves</h2><img src="learning_curves.png" alt="learning curves">
<h2>Baseline, every trial, best</h2><table><tr>{head}</tr>{body}</table>
</body></html>
"""
