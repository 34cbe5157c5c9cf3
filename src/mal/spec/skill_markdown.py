"""SKILL.md of the TAO skill layout, rendered from `skill_info()` and the train action's JSON schema.

A pure renderer: it takes the two generated dicts and returns markdown, so every fact in SKILL.md comes from the
spec models (keys, defaults, descriptions, AutoML metadata) or from `mal.spec.export.ACTION_INFO`, and the file
cannot say something the machine-readable files do not. `mal.spec.export.write_skill_dir` writes it.
"""

from __future__ import annotations

import json
from typing import Any


def _cell(text: Any) -> str:
    """One table cell: on one line, with the pipes that would split it escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _codes(items: list[str]) -> str:
    return ", ".join(f"`{item}`" for item in items) if items else "none"


def _frontmatter(info: dict[str, Any]) -> list[str]:
    # Agent-skill readers pick a skill by its front matter's name and description; JSON strings are valid YAML
    # scalars, so a description with a colon or a quote stays one value.
    actions = ", ".join(info["actions"])
    description = f"{info['description']} Actions: {actions}, each `mal <action> -e spec.yaml key=value`."
    return ["---", f"name: {info['name']}", f"description: {json.dumps(description)}", "---", ""]


def _action_lines(name: str, action: dict[str, Any]) -> list[str]:
    lines = [
        f"### {name}",
        "",
        "```bash",
        f"mal {name} -e spec.yaml key=value ...",
        "```",
        "",
        action["description"],
        "",
        f"- Inputs (spec keys): {_codes(action['inputs'])}",
        f"- Outputs: {_codes(action['outputs'])}",
    ]
    if "metric" in action:
        lines.append(f"- Metric: `{action['metric']}` ({action['direction']})")
    lines.append(f"- KPIs (status.json `kpi`): {_codes(action['kpis'])}")
    lines.append(f"- AutoML: {'yes' if action['automl_enabled'] else 'no'}")
    lines.append("")
    return lines


def _automl_lines(info: dict[str, Any]) -> list[str]:
    policy = info["automl_policy"]
    checkpoints = info["checkpoints"]
    lines = [
        "## AutoML",
        "",
        f"- Enabled: {'yes' if info['automl_enabled'] else 'no'}; default algorithm `{policy['default_algorithm']}`, "
        f"optimising `{policy['metric']}` ({policy['direction']}) from the `{policy['metric_action']}` action's "
        "status.json `kpi`.",
        f"- Searched by default: {_codes(policy['default_parameters'])}",
        f"- May be searched (`automl_enabled`): {_codes(policy['enabled_parameters'])}",
        f"- Budget key (epochs): `{policy['epochs_key']}`; each trial gets its own `{policy['results_dir_key']}`; "
        f"a trial continues from a checkpoint through `{policy['resume_checkpoint_key']}`.",
        "",
        f"Checkpoints (written by `{checkpoints['action']}`):",
        "",
        "| which | path |",
        "|---|---|",
    ]
    for which in ("best", "latest", "epoch"):
        lines.append(f"| {which} | `{checkpoints[which]}` |")
    lines += [
        "",
        f"- `best` is chosen by `{checkpoints['best_metric']}`; it exists only when validation ran on data with "
        "masks.",
        f"- `{{NNN}}` in `epoch`: {checkpoints['epoch_number']}",
        f"- Consumed by: {_codes([checkpoints[key] for key in ('evaluate_key', 'inference_key', 'export_key')])}; "
        f"resume with `{checkpoints['resume_key']}` (`{checkpoints['resume_latest_value']}` picks the latest).",
        "",
    ]
    return lines


def _leaf_row(key: str, leaf: dict[str, Any], default_searched: list[str]) -> str:
    kind = leaf["type"] if isinstance(leaf["type"], str) else "/".join(leaf["type"])
    if "enum" in leaf:
        kind += ": " + " / ".join(str(choice) for choice in leaf["enum"] if choice is not None)
    automl = ""
    if leaf.get("automl_enabled"):
        automl = f"{leaf.get('minimum')} to {leaf.get('maximum')}"
        if key in default_searched:
            automl += " (default search)"
    default = json.dumps(leaf["default"])
    return f"| `{key}` | {_cell(kind)} | `{_cell(default)}` | {automl} | {_cell(leaf.get('description', ''))} |"


def _spec_lines(schema: dict[str, Any], default_searched: list[str]) -> list[str]:
    header = ["| key | type | default | AutoML range | description |", "|---|---|---|---|---|"]
    top = [(name, node) for name, node in schema["properties"].items() if node.get("type") != "object"]
    lines = ["## Spec keys", "",
             "One spec file serves every action. The AutoML range is what a search explores by default.", ""]
    if top:
        lines += ["### top level", "", *header]
        lines += [_leaf_row(name, leaf, default_searched) for name, leaf in top]
        lines.append("")
    for name, node in schema["properties"].items():
        if node.get("type") != "object":
            continue
        lines += [f"### {name}", ""]
        if node.get("description"):
            lines += [node["description"], ""]
        lines += header
        lines += [_leaf_row(f"{name}.{leaf_name}", leaf, default_searched)
                  for leaf_name, leaf in node["properties"].items()]
        lines.append("")
    return lines


def skill_markdown(info: dict[str, Any], schema: dict[str, Any], files: list[str]) -> str:
    """SKILL.md from `skill_info()`, `action_schema("train")` (every action reads the same spec) and the files
    the skill dir holds besides SKILL.md."""
    lines = _frontmatter(info)
    lines += [
        f"# {info['display_name']} (`{info['name']}` {info['version']})",
        "",
        "Generated by `mal schema --out DIR` from the spec models (`src/mal/spec/schema.py`); do not edit by hand.",
        "",
        info["description"],
        "",
        "## Files",
        "",
        *[f"- `{path}`" for path in files],
        "",
        "## Actions",
        "",
        "Each action reads the whole spec, takes `section.key=value` overrides after it, writes under "
        "`results_dir/<action>/` and appends JSON Lines events to its `status.json`.",
        "",
    ]
    for name, action in info["actions"].items():
        lines += _action_lines(name, action)
    lines += _automl_lines(info)
    lines += _spec_lines(schema, info["automl_policy"]["default_parameters"])
    return "\n".join(lines).rstrip("\n") + "\n"
