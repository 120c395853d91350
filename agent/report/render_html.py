"""The compliance report as one self-contained HTML file: inline CSS and inline SVG charts. Pure.

Nothing is fetched: no scripts, no fonts, no images, no links; a Content-Security-Policy of
`default-src 'none'` makes a browser refuse anything that slipped in. Every value from the store or
the alerts file is escaped (`svg.esc`): log content is hostile.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agent.report.summary import Breakdown, Item, Summary
from agent.report.svg import PALETTE, clip, esc, hbars, stacked_bars

LEVEL_COLORS = {"critical": "#8e1b16", "high": "#c8423b", "medium": "#e07b39", "low": "#b5a72f",
                "informational": "#6f7780"}
ROWS_SHOWN = 50
CELL_LIMIT = 300
"""Characters of a table cell shown (a log line can be megabytes); the JSON report keeps them whole."""

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:960px;color:#1d2329;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #e3e6e9;padding-bottom:4px;margin-top:2em}
h3{font-size:1em;margin:1.2em 0 .4em}
.meta{color:#5a636c}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{border:1px solid #d8dce0;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:1.5em}.ok{color:#1f7a3a}.bad{color:#b3261e}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.badge.ok{background:#1f7a3a;color:#fff}.badge.bad{background:#b3261e;color:#fff}
table{border-collapse:collapse;width:100%;font-size:.88em;margin:.4em 0}
th,td{border-bottom:1px solid #e3e6e9;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f6f8}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{overflow-wrap:break-word}td.wrap:last-child{word-break:break-all}.note{color:#5a636c;font-style:italic}svg.chart{max-width:100%;height:auto}
footer{margin-top:3em;color:#5a636c;font-size:.85em}
"""


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{esc(v)}</td>' if i in numeric else
                        f'<td class="wrap">{esc(clip(str(v), CELL_LIMIT))}</td>' for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    if not body:
        return '<p class="note">none</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _card(label: str, value: object, cls: str = "") -> str:
    return f'<div class="card"><b class="{cls}">{esc(value)}</b>{esc(label)}</div>'


def _items(items: Sequence[Item], total: int) -> str:
    shown = items[:ROWS_SHOWN]
    table = _table(("time", "node", "kind", "user", "source", "what"),
                   ((i.time, i.node, i.kind, i.user, i.source_ip, clip(i.detail, 160)) for i in shown))
    if total > len(shown):
        table += f'<p class="note">first {len(shown)} of {total} shown; the JSON report lists up to ' \
                 f"{len(items)}.</p>"
    return table


def _breakdown(title: str, b: Breakdown, color: str, starts: Sequence[str]) -> str:
    if not b.total:
        return f'<p class="note">no {esc(title)} in this period</p>'
    over_time = stacked_bars(title + " over time", starts, [(x.name, x.counts) for x in b.over_time], height=180)
    return (f"<p><b>{b.total}</b> {esc(title)}.</p>"
            f"<h3>over time, by kind</h3>{over_time}"
            f"<h3>by kind</h3>{hbars(title + ' by kind', b.by_kind, color)}"
            f"<h3>by user</h3>{hbars(title + ' by user', b.by_user[:10], color)}"
            + (f"<h3>by source address</h3>{hbars(title + ' by source address', b.by_source[:10], color)}"
               if b.by_source else "")
            + f"<h3>by node</h3>{_table(('node', 'count'), b.by_node, (1,))}"
            f"<h3>events</h3>{_items(b.items, b.total)}")


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def render_html(s: Summary) -> str:
    v = s.verification
    status_cls = "ok" if v.ok else "bad"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>logseal compliance report {esc(s.since)} to {esc(s.until)}</title>",
           f"<style>{_CSS}</style></head><body>",
           "<h1>logseal compliance report</h1>",
           f'<p class="meta">store {esc(s.store)}<br>period {esc(s.since)} to {esc(s.until)} (UTC)<br>'
           f"generated {esc(s.generated)}</p>",
           '<div class="cards">',
           _card("verification", v.status, status_cls),
           _card("events", s.events), _card("nodes", len(s.nodes)),
           _card("authentication failures", s.auth_failures.total, "bad" if s.auth_failures.total else ""),
           _card("privileged actions", s.privileged.total),
           _card("alerts", s.alerts.total if s.alerts.source else "n/a", "bad" if s.alerts.total else ""),
           _card("gaps", s.gaps_total, "bad" if s.gaps_total else ""),
           "</div>"]

    out.append("<h2>Chain and checkpoint verification</h2>")
    out.append(f'<p><span class="badge {status_cls}">{esc(v.status)}</span> the whole store: {v.batches} batches, '
               f"{v.events} events, Merkle tree of {v.tree_size} leaves, {v.checkpoints} signed checkpoint(s)"
               f"{f', {v.witness_checkpoints} witnessed' if v.witness_checkpoints else ''}, "
               f"{v.declared_gaps} declared gap(s).</p>")
    if v.problems:
        out.append(_table(("problem", "where", "batch", "detail"),
                          ((p.kind, p.where, p.batch, p.detail) for p in v.problems[:ROWS_SHOWN])))
        if len(v.problems) > ROWS_SHOWN:
            out.append(f'<p class="note">first {ROWS_SHOWN} of {len(v.problems)} problems shown; '
                       "`logseal verify STORE` lists them all.</p>")
    out.extend(f'<p class="note">{esc(line)}</p>' for line in v.info)
    if s.unreadable:
        out.append("<h3>batches whose events could not be read (not counted below)</h3>")
        out.append(_table(("node", "batch", "events in period", "why"),
                          ((u.node, u.batch, u.events, u.reason) for u in s.unreadable[:ROWS_SHOWN]), (2,)))

    out.append("<h2>Events per node and dataset</h2>")
    hours = s.timeline.bucket_s / 3600
    width = f"{hours:g} h" if hours >= 1 else f"{s.timeline.bucket_s // 60} min"
    if s.events:
        out.append(f"<h3>by node, per {esc(width)}</h3>")
        out.append(stacked_bars("events by node over time", s.timeline.starts,
                                [(x.name, x.counts) for x in s.timeline.by_node]))
        out.append(f"<h3>by dataset, per {esc(width)}</h3>")
        out.append(stacked_bars("events by dataset over time", s.timeline.starts,
                                [(x.name, x.counts) for x in s.timeline.by_dataset]))
    headers = ("node", *s.datasets, "total")
    matrix: dict[str, dict[str, int]] = {}
    for node, dataset, count in s.by_node_dataset:
        matrix.setdefault(node, {})[dataset] = count
    out.append(_table(headers, ((node, *(matrix[node].get(d, 0) for d in s.datasets), sum(matrix[node].values()))
                                for node in s.nodes), tuple(range(1, len(headers)))))

    out.append("<h2>Authentication failures</h2>")
    out.append(_breakdown("authentication failures", s.auth_failures, LEVEL_COLORS["high"], s.timeline.starts))
    out.append("<h2>Privileged actions</h2>")
    out.append(_breakdown("privileged actions", s.privileged, PALETTE[4], s.timeline.starts))

    out.append("<h2>Top principals</h2>")
    if s.principals:
        out.append(hbars("events by principal", [(p.name, p.events) for p in s.principals]))
        out.append(_table(("user.name", "events", "authentication failures", "privileged actions", "nodes"),
                          ((p.name, p.events, p.auth_failures, p.privileged, ", ".join(p.nodes))
                           for p in s.principals), (1, 2, 3)))
    else:
        out.append('<p class="note">no events with a user.name in this period</p>')

    out.append("<h2>Alerts by rule and level</h2>")
    a = s.alerts
    if a.source is None:
        out.append(f'<p class="note">{esc(a.note)}</p>')
    else:
        out.append(f'<p>from {esc(a.source)}: <b>{a.total}</b> alert(s) in this period'
                   f"{f'; {a.unreadable_lines} unreadable line(s) skipped' if a.unreadable_lines else ''}.</p>")
        if a.total:
            out.append("<h3>by level</h3>")
            out.append(hbars("alerts by level", a.by_level, colors=[LEVEL_COLORS.get(k, PALETTE[7])
                                                                   for k, _ in a.by_level]))
            out.append("<h3>by rule</h3>")
            out.append(hbars("alerts by rule", [(r.name or r.rule_id, r.count) for r in a.by_rule[:15]],
                             colors=[LEVEL_COLORS.get(r.level, PALETTE[7]) for r in a.by_rule[:15]]))
            out.append(_table(("rule", "id", "level", "alerts", "last"),
                              ((r.name, r.rule_id, r.level, r.count, r.last_time) for r in a.by_rule), (3,)))

    out.append("<h2>Gaps and coverage</h2>")
    if s.gaps_total:
        out.append(f"<p><b>{s.gaps_total}</b> gap(s) in this period: loss the nodes declared and signed.</p>")
        out.append(_table(("time", "node", "kind", "what", "bytes", "reason"),
                          ((g.time, g.node, g.kind, g.what, "" if g.bytes is None else g.bytes, g.reason)
                           for g in s.gaps[:ROWS_SHOWN]), (4,)))
    else:
        out.append('<p class="note">no gaps in this period</p>')
    out.append("<h3>coverage: when each node's batches arrived (heartbeats included)</h3>")
    out.append(_table(("node", "batches", "first", "last", "longest silence", "silent from"),
                      ((c.node, c.batches, c.first, c.last, _duration(c.longest_silence_s), c.silence_from)
                       for c in s.coverage), (1,)))
    if s.rejections:
        out.append("<h3>batches the aggregator rejected</h3>")
        out.append(_table(("verdict", "batches"), s.rejections, (1,)))

    out.append("<h2>Retention actions</h2>")
    r = s.retention
    if r.actions:
        out.append(_table(("time", "rule", "segment", "batches", "leaves", "bytes", "note", "signed"),
                          ((x.time, x.rule, x.segment, x.batches, x.leaves, "" if x.bytes is None else x.bytes,
                            x.note, "yes" if x.signed else "no") for x in r.actions), (5,)))
    else:
        out.append(f'<p class="note">{esc(r.note)}</p>')
    if r.outside_window:
        out.append(f'<p class="note">{r.outside_window} retention action(s) outside this period.</p>')

    out.append("<footer><p>Definitions: an authentication failure is an event with outcome failure in the "
               "authentication category, or a Kubernetes request answered 401 or 403. A privileged action is a "
               "sudo or su use, a program run as root by another user, a Kubernetes RBAC change, pods/exec or "
               "attach, a privileged pod, a secret read or impersonation, when it did not fail. A principal is "
               "user.name. Gaps are the gap records and dropped batches nodes signed. Verification covers the "
               "whole store; everything else covers the period.</p></footer>")
    out.append("</body></html>\n")
    return "\n".join(out)
