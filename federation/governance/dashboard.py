"""A self-contained HTML dashboard of one run, for the consortium's clinical, data and compliance teams.

Built from the verified ledger (and the registry's cards), it answers the
questions a consortium asks of each update: who took part, how the model changed
at each site, which rounds were rejected or rolled back and why, how much privacy
budget each site has spent, whether a site's data drifted or its updates look
unusual, how much each site contributed, whether a patient group is served worse,
and how many clinician-confirmed cases validate the model. plotly.js is inlined,
so the file opens from disk with no server and no network. A ledger that fails
verification is shown as such, and nothing from it is plotted.
"""
from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from federation.governance.hashing import sha256_file
from federation.governance.layout import (
    dashboard_path,
    governance_of,
    ledger_path,
    registry_dir,
)
from federation.governance.ledger import (
    FEEDBACK,
    ROLLBACK,
    ROUND,
    RUN_START,
    SITE_EXIT,
    LedgerError,
    read_ledger,
)
from federation.governance.registry import MODEL, Registry, RegistryError
from federation.outputs import write_text
from federation.round_record import ROUND_DECISIONS, SITE_STATUSES

STATUS_COLOURS = {"accepted": "#2ca02c", "rejected": "#d62728", "skipped": "#b0b0b0", "failed": "#ff7f0e"}
DECISION_SYMBOLS = {"accepted": "circle", "rejected": "x", "rolled_back": "triangle-down", "failed": "square"}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;font-size:.9rem}
th{background:#f3f3f3}.ok{background:#e7f6e7;padding:.5rem}.bad{background:#fde2e2;padding:.5rem}.note{color:#666}
code{font-size:.85rem}
"""


def build_dashboard(run_dir: str | Path, governance_cfg: Any = None) -> str:
    cfg = governance_cfg if governance_cfg is not None else governance_of(run_dir)
    path = ledger_path(cfg, run_dir)
    try:
        entries = read_ledger(path)
    except LedgerError as err:
        return _page(f"Governance: {run_dir}", [f'<p class="bad">Ledger failed verification: {html.escape(str(err))}. Nothing from it is shown.</p>'])
    status = f'<p class="ok">Ledger verified: {len(entries)} entries, head <code>{entries[-1]["hash"] if entries else "-"}</code> ({html.escape(str(path))})</p>'
    return _page(f"Governance: {_consortium_name(entries) or run_dir}", [status, *_sections(entries, cfg, Registry(registry_dir(cfg, run_dir)))])


def write_dashboard(run_dir: str | Path, governance_cfg: Any = None) -> Path:
    cfg = governance_cfg if governance_cfg is not None else governance_of(run_dir)
    target = dashboard_path(cfg, run_dir)
    write_text(target, build_dashboard(run_dir, cfg))
    return target


def _consortium_name(entries: list[dict]) -> str | None:
    start = next((e for e in entries if e["kind"] == RUN_START), None)
    return start["data"].get("consortium") if start else None


def _sections(entries: list[dict], cfg: Any, registry: Registry) -> list[str]:
    rounds = [e["data"] for e in entries if e["kind"] == ROUND]
    metric = cfg.promotion.metric
    parts = [
        _section(
            "Model performance",
            _plot(_metric_figure(rounds, metric), "plot-metrics"),
            "Validation metric of each round's model at each site; the mean's marker shows the decision.",
        ),
        _section("Decisions", _table(["round", "decision", "reason", "participants", "version"], _decision_rows(rounds))),
        _section("Participation", _plot(_participation_figure(rounds), "plot-participation")),
        _section("Rollbacks and exits", _table(["entry", "kind", "what", "reason"], _event_rows(entries)) or _note("No rollback and no site exit.")),
        _section(
            "Privacy budget spent",
            _optional_plot(_series(rounds, lambda r: {s: p.get("epsilon") for s, p in (r.get("privacy") or {}).items()}), "epsilon", "plot-privacy")
            or _note("No differential privacy was configured: no budget was recorded."),
        ),
        _section(
            "Data drift",
            _optional_plot(
                _series(rounds, lambda r: {s: d.get("vs_first") for s, d in _finding(r, "drift").items()}),
                "SMD vs first round",
                "plot-drift",
                _series(rounds, lambda r: {s: d.get("vs_others") for s, d in _finding(r, "drift").items()}),
            )
            or _note("No drift was monitored."),
        ),
        _section("Update anomaly flags", _table(["round", "site", "flags"], _flag_rows(rounds)) or _note("No update was flagged.")),
        _section(
            "Site contributions (leave-one-out)",
            _optional_plot(_series(rounds, lambda r: _finding(r, "contribution")), f"change in mean {metric}", "plot-contribution")
            or _note("Contributions were not computed."),
        ),
        _section("Subgroups (latest round)", _subgroup_table(rounds) or _note("No patient attributes were available.")),
        _section("Clinician feedback", _table(["site", "confirmed cases in validation"], _feedback_rows(entries)) or _note("No feedback entry.")),
        _section("Registry", _table(["version", "round", "parent", "participants", "file check"], _registry_rows(registry)) or _note("No registered version.")),
    ]
    return parts


def _finding(round_: Mapping, name: str) -> dict:
    return (round_.get("findings") or {}).get(name) or {}


def _series(rounds: Sequence[Mapping], pick) -> dict[str, tuple[list[int], list[float]]]:
    """site -> (rounds, values) for the finite values `pick(round)` gives."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in rounds:
        for site, value in (pick(r) or {}).items():
            if isinstance(value, (int, float)):
                xs, ys = out.setdefault(site, ([], []))
                xs.append(r["round"])
                ys.append(float(value))
    return out


def _metric_figure(rounds: Sequence[Mapping], metric: str) -> go.Figure:
    fig = go.Figure()
    for site, (xs, ys) in sorted(_series(rounds, lambda r: {s: v["val_metrics"].get(metric) for s, v in r["sites"].items()}).items()):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=site, opacity=0.6))
    for decision in ROUND_DECISIONS:
        chosen = [r for r in rounds if r["decision"] == decision]
        means = [_mean(v["val_metrics"].get(metric) for v in r["sites"].values()) for r in chosen]
        shown = [(r, m) for r, m in zip(chosen, means) if m is not None]
        if shown:
            fig.add_trace(go.Scatter(
                x=[r["round"] for r, _ in shown], y=[m for _, m in shown], mode="markers", name=f"mean ({decision})",
                marker={"symbol": DECISION_SYMBOLS[decision], "size": 12, "color": "black" if decision == "accepted" else "#d62728"},
                text=[r["reason"] for r, _ in shown], hovertemplate="round %{x}: %{y:.3f}<br>%{text}",
            ))  # fmt: skip
    return _layout(fig, "round", metric)


def _participation_figure(rounds: Sequence[Mapping]) -> go.Figure:
    fig = go.Figure()
    for status in SITE_STATUSES:
        cells = [(r["round"], site, v["reason"]) for r in rounds for site, v in r["sites"].items() if v["status"] == status]
        if cells:
            fig.add_trace(go.Scatter(
                x=[c[0] for c in cells], y=[c[1] for c in cells], mode="markers", name=status, text=[c[2] for c in cells],
                marker={"symbol": "square", "size": 14, "color": STATUS_COLOURS[status]}, hovertemplate="%{y}, round %{x}: " + status + " %{text}",
            ))  # fmt: skip
    return _layout(fig, "round", "site")


def _optional_plot(series: dict, y_title: str, div_id: str, dashed: dict | None = None) -> str | None:
    if not series:
        return None
    fig = go.Figure()
    for site, (xs, ys) in sorted(series.items()):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=site))
    for site, (xs, ys) in sorted((dashed or {}).items()):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{site} vs other sites", line={"dash": "dot"}))
    return _plot(_layout(fig, "round", y_title), div_id)


def _layout(fig: go.Figure, x_title: str, y_title: str) -> go.Figure:
    fig.update_layout(template="plotly_white", height=360, margin={"l": 60, "r": 20, "t": 20, "b": 50}, xaxis_title=x_title, yaxis_title=y_title)
    fig.update_xaxes(dtick=1, tickformat="d")  # rounds are whole numbers
    return fig


def _plot(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)


def _decision_rows(rounds: Sequence[Mapping]) -> list[list[Any]]:
    return [[r["round"], r["decision"], r["reason"], ", ".join(r["participants"]), "" if r.get("version") is None else r["version"]] for r in rounds]


def _event_rows(entries: Sequence[Mapping]) -> list[list[Any]]:
    rows = []
    for e in entries:
        d = e["data"]
        if e["kind"] == ROLLBACK:
            rows.append([e["seq"], "rollback", f"version {d['version']} restored (was {d.get('from_version')})", d.get("reason", "")])
        elif e["kind"] == SITE_EXIT:
            rows.append([e["seq"], "site exit", f"{d['site']} ({d.get('mode', '')})", d.get("reason", "")])
    return rows


def _flag_rows(rounds: Sequence[Mapping]) -> list[list[Any]]:
    rows = []
    for r in rounds:
        flags = dict(_finding(r, "anomaly").get("flags") or {})
        for site, names in (_finding(r, "participation").get("flags") or {}).items():
            flags[site] = list(flags.get(site, [])) + list(names)
        for site, d in _finding(r, "drift").items():
            if d.get("flagged"):
                flags[site] = list(flags.get(site, [])) + ["drift"]
        rows += [[r["round"], site, ", ".join(names)] for site, names in sorted(flags.items()) if names]
    return rows


def _subgroup_table(rounds: Sequence[Mapping]) -> str | None:
    latest = next((r for r in reversed(rounds) if _finding(r, "subgroups")), None)
    if latest is None:
        return None
    rows = [[attribute, group, v["n"], _fmt(v.get("accuracy")), _fmt(v.get("top3_accuracy"))]
            for attribute, groups in _finding(latest, "subgroups").items() for group, v in groups.items()]  # fmt: skip
    return f'<p class="note">Round {latest["round"]}; groups too small to report are shown as "&lt;k" without metrics.</p>' + _table(
        ["attribute", "group", "n", "accuracy", "top-3 accuracy"], rows
    )


def _feedback_rows(entries: Sequence[Mapping]) -> list[list[Any]]:
    latest = next((e for e in reversed(entries) if e["kind"] == FEEDBACK), None)
    return [[site, n] for site, n in sorted(latest["data"]["sites"].items())] if latest else []


def _registry_rows(registry: Registry) -> list[list[Any]]:
    rows = []
    current = registry.current()
    for version in registry.versions():
        try:
            card = registry.card(version)
            ok = sha256_file(registry.path(version) / card.get("model_file", MODEL)) == card.get("file_sha256")
        except (OSError, RegistryError) as err:
            rows.append([version, "", "", "", f"unreadable: {err}"])
            continue
        label = f"{version} (current)" if version == current else version
        rows.append([label, card.get("round"), card.get("parent"), ", ".join(card.get("participants", [])), "ok" if ok else "FILE DOES NOT MATCH CARD"])
    return rows


def _mean(values: Iterable[Any]) -> float | None:
    finite = [float(v) for v in values if isinstance(v, (int, float))]
    return sum(finite) / len(finite) if finite else None


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _section(title: str, body: str, caption: str = "") -> str:
    caption = f'<p class="note">{html.escape(caption)}</p>' if caption else ""
    return f"<section><h2>{html.escape(title)}</h2>{caption}{body}</section>"


def _page(title: str, parts: Sequence[str]) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(str(title))}</title>'
        f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head>"
        f"<body><h1>{html.escape(str(title))}</h1>{''.join(parts)}</body></html>"
    )
