"""Which third-party imports of ramp_airflow cost what, from ``python -X importtime`` output."""

from __future__ import annotations


def importtime_breakdown(stderr: str, top: int) -> list[tuple[str, float]]:
    """
    Cumulative import time of each third-party module that a ramp_airflow module imports
    directly during the parse, grouped by package (from ``python -X importtime``).
    """
    lines = stderr.split("PARSE-TIME-MARK\n", 1)[1].splitlines()
    pending: dict[int, list[tuple[str, float]]] = {}  # level -> finished children awaiting a parent
    totals: dict[str, float] = {}
    for line in lines:
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if not cumulative.strip().isdigit():
            continue
        stripped = name.lstrip(" ")
        level = (len(name) - len(stripped) - 1) // 2
        children = pending.pop(level + 1, [])
        if stripped.startswith("ramp_airflow"):
            for child_name, child_us in children:
                if not child_name.startswith("ramp_airflow"):
                    group = _package(child_name)
                    totals[group] = totals.get(group, 0.0) + child_us / 1e6
        pending.setdefault(level, []).append((stripped, float(cumulative)))
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


def _package(module: str) -> str:
    parts = module.split(".")
    if parts[:2] == ["airflow", "providers"]:
        return ".".join(parts[:4])
    if parts[0] == "airflow":
        return ".".join(parts[:2])
    return parts[0]
