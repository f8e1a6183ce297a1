//! Run pages, drawn on the server as plain HTML with a little CSS and
//! inline SVG: the list of recent runs, and one page per run with its
//! phases and items, sign-offs, monitoring verdicts and charts, incidents
//! with every page and acknowledgement, and the audit timeline. The same
//! data as JSON for other tools. Every text from people or platforms is
//! escaped; nothing here ever holds a token or a secret.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::chart::line_chart;
use crate::config::Config;
use crate::domain::monitor::{describe, Reading};
use crate::domain::runbook::Severity;
use crate::domain::{Incident, ItemState, Run, Runbook, Verdict};
use crate::store::{AuditEntry, PageRecord, TickRecord};

/// Everything a run's page shows.
pub struct RunView<'a> {
    pub run: &'a Run,
    pub runbook: &'a Runbook,
    /// Why the run cannot go on, when it cannot.
    pub stranded: Option<&'a str>,
    pub config: &'a Config,
    pub audit: &'a [AuditEntry],
    pub ticks: &'a [TickRecord],
    pub incidents: &'a [(Incident, Vec<PageRecord>)],
}

/// Escape text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;background:#f6f7f9;color:#1d2330;line-height:1.45}
main{max-width:860px;margin:0 auto;padding:16px}
h1{font-size:1.45rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.6rem 0 .5rem;border-bottom:2px solid #d9dde5;padding-bottom:.2rem}
h3{font-size:1rem;margin:1rem 0 .3rem}
.meta{color:#4a5263;margin:.2rem 0}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.8rem;font-weight:600;background:#e4e7ee;vertical-align:middle}
.s-active,.s-triggered{background:#dbeafe;color:#1e40af}.s-completed,.s-resolved{background:#dcfce7;color:#166534}
.s-aborted,.s-rolled_back,.s-rolling_back,.s-critical{background:#fee2e2;color:#991b1b}.s-acknowledged,.s-high{background:#fef3c7;color:#92400e}
.s-medium,.s-low,.s-unknown{background:#e4e7ee;color:#374151}.s-healthy{background:#dcfce7;color:#166534}
.card{background:#fff;border:1px solid #e1e4ea;border-radius:10px;padding:10px 14px;margin:.6rem 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.92rem}th,td{text-align:left;padding:.3rem .4rem;border-bottom:1px solid #eceef2;vertical-align:top}
th{color:#4a5263;font-weight:600}
ul{padding-left:1.2rem;margin:.3rem 0}
.chart{width:100%;height:auto;background:#fff;border:1px solid #e1e4ea;border-radius:10px;margin:.4rem 0}
.chart-title{font-size:13px;font-weight:600;fill:#1d2330}.axis{font-size:11px;fill:#6b7280}
.grid{stroke:#eceef2}.threshold{stroke:#dc2626;stroke-dasharray:5 4}
.series{fill:none;stroke:#2563eb;stroke-width:2.5}.point{fill:#2563eb}.unknown{fill:#9ca3af;font-size:12px}
.timeline li{margin:.15rem 0}.muted{color:#6b7280}
a{color:#1d4ed8}
";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        escape(title)
    )
}

fn badge(class: &str, text: &str) -> String {
    format!(
        "<span class=\"badge s-{}\">{}</span>",
        escape(class),
        escape(text)
    )
}

fn phase_title<'a>(runbook: &'a Runbook, id: &'a str) -> &'a str {
    runbook.phase(id).map_or(id, |p| p.title.as_str())
}

/// `GET /runs`: recent runs, each with its link (when links are on) and the
/// title of its current phase in the runbook version it follows.
pub fn run_list(runs: &[(Run, Option<String>, String)], config: &Config) -> String {
    let mut body = String::from("<h1>Deployments</h1>");
    if runs.is_empty() {
        body.push_str("<p class=\"muted\">No deployments yet.</p>");
        return page("tminus — deployments", &body);
    }
    body.push_str(
        "<div class=\"card scroll\"><table><thead><tr><th>Deployment</th><th>Status</th>\
         <th>Phase</th><th>Started by</th><th>When</th></tr></thead><tbody>",
    );
    for (run, link, phase) in runs {
        let label = escape(&format!("{} {} #{}", run.service, run.version, run.number));
        let name = match link {
            Some(href) => format!("<a href=\"{}\">{label}</a>", escape(href)),
            None => label,
        };
        let _ = write!(
            body,
            "<tr><td>{name}<br><span class=\"muted\">{} · {}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&run.env),
            escape(run.platform.as_str()),
            badge(run.status.as_str(), run.status.label()),
            escape(phase),
            escape(config.directory.name(&run.started_by)),
            when(run.started_at)
        );
    }
    body.push_str("</tbody></table></div>");
    page("tminus — deployments", &body)
}

/// `GET /runs/{id}`. `query` is the access query string, for the links to
/// the report and the JSON.
pub fn run_page(v: &RunView<'_>, query: Option<&str>) -> String {
    let (run, runbook, dir) = (v.run, v.runbook, &v.config.directory);
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>{} {} <span class=\"muted\">#{}</span></h1>",
        escape(&run.service),
        escape(&run.version),
        run.number
    );
    let _ = write!(
        b,
        "<p class=\"meta\">{} · {} · runbook {} (<a href=\"#runbook\">{}</a>) · on {}</p>",
        badge(run.status.as_str(), run.status.label()),
        escape(&run.env),
        escape(&runbook.name),
        escape(&crate::engine::run_label(run)),
        escape(run.platform.as_str())
    );
    if let Some(why) = v.stranded {
        let _ = write!(b, "<p class=\"card\"><strong>{}</strong></p>", escape(why));
    }
    let _ = write!(
        b,
        "<p class=\"meta\">Started by {} at {} · current phase: {}{}</p>",
        escape(dir.name(&run.started_by)),
        when(run.started_at),
        escape(phase_title(runbook, &run.phase)),
        run.t0.map_or(String::new(), |t| format!(
            " · production deploy (T0) {}",
            when(t)
        ))
    );
    if let Some(reason) = &run.end_reason {
        let _ = write!(b, "<p class=\"meta\">Ended: {}</p>", escape(reason));
    }

    b.push_str("<section id=\"phases\"><h2>Phases</h2>");
    for phase in run.reached_phases(runbook) {
        let current = if phase.id == run.phase {
            " (current)"
        } else {
            ""
        };
        let _ = write!(
            b,
            "<div class=\"card phase\"><h3>{}{current}</h3><div class=\"scroll\"><table><thead><tr><th>Item</th><th>State</th><th>By</th><th>When</th></tr></thead><tbody>",
            escape(&phase.title)
        );
        for item in &phase.items {
            let (state, by, at) = match run.item_state(&phase.id, &item.id) {
                ItemState::Pending if item.optional => {
                    ("○ pending (optional)".to_string(), "", String::new())
                }
                ItemState::Pending => ("○ pending".to_string(), "", String::new()),
                ItemState::Done { by, at } => ("✓ done".to_string(), dir.name(by), when(*at)),
                ItemState::NotApplicable { by, at, reason } => (
                    format!("– not applicable: {reason}"),
                    dir.name(by),
                    when(*at),
                ),
            };
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{at}</td></tr>",
                escape(&item.text),
                escape(&state),
                escape(by)
            );
        }
        b.push_str("</tbody></table></div>");
        let signoffs: Vec<_> = run
            .signoffs
            .iter()
            .filter(|s| s.phase == phase.id)
            .collect();
        if !phase.gate.is_empty() || !signoffs.is_empty() {
            b.push_str("<p><strong>Sign-offs</strong></p><ul class=\"signoffs\">");
            for need in &phase.gate.signoffs {
                let _ = write!(
                    b,
                    "<li>{}: needs {}",
                    escape(dir.role_name(&need.role)),
                    need.quorum
                );
                let given: Vec<String> = signoffs
                    .iter()
                    .filter(|s| s.role == need.role)
                    .map(|s| match &s.verdict {
                        Verdict::Approved => {
                            format!("✓ {} ({})", dir.name(&s.person), when(s.at))
                        }
                        Verdict::Rejected { reason } => format!(
                            "✗ {} rejected: {reason} ({})",
                            dir.name(&s.person),
                            when(s.at)
                        ),
                    })
                    .collect();
                if given.is_empty() {
                    b.push_str(" — none yet");
                } else {
                    let _ = write!(b, " — {}", escape(&given.join(", ")));
                }
                b.push_str("</li>");
            }
            b.push_str("</ul>");
        }
        b.push_str("</div>");
    }
    b.push_str("</section>");

    if !v.ticks.is_empty() {
        b.push_str("<section id=\"monitoring\"><h2>Monitoring</h2>");
        b.push_str(&charts(v));
        b.push_str(
            "<div class=\"card scroll\"><table><thead><tr><th>When</th><th>Verdict</th><th>Readings</th></tr></thead><tbody>",
        );
        for t in v.ticks {
            let readings: Vec<(String, Reading)> =
                serde_json::from_str(&t.readings).unwrap_or_default();
            let text: Vec<String> = readings
                .iter()
                .map(|(n, r)| format!("{n}: {}", describe(r)))
                .collect();
            let offset = run.t0.map_or(String::new(), |t0| {
                format!(" (T+{}m)", (t.tick_at - t0).num_minutes())
            });
            let _ = write!(
                b,
                "<tr><td>{}{offset}</td><td>{}</td><td>{}</td></tr>",
                when(t.tick_at),
                badge(&t.level, &t.level),
                escape(&text.join("; "))
            );
        }
        b.push_str("</tbody></table></div></section>");
    }

    if !v.incidents.is_empty() {
        b.push_str("<section id=\"incidents\"><h2>Incidents</h2>");
        for (i, pages) in v.incidents {
            let _ = write!(
                b,
                "<div class=\"card incident\"><h3>#{} {} — {}</h3><p class=\"meta\">{} · opened {}</p><ul>",
                i.id,
                badge(i.severity.as_str(), i.severity.as_str()),
                escape(&i.summary),
                badge(i.status.as_str(), i.status.as_str()),
                when(i.opened_at)
            );
            for p in pages {
                let _ = write!(
                    b,
                    "<li>Paged {} ({}, step {}) at {}</li>",
                    escape(dir.name(&p.person)),
                    escape(&p.via),
                    p.step + 1,
                    when(p.at)
                );
            }
            if let (Some(by), Some(at)) = (&i.acked_by, i.acked_at) {
                let _ = write!(
                    b,
                    "<li>Acknowledged by {} at {}</li>",
                    escape(dir.name(by)),
                    when(at)
                );
            }
            if let (Some(by), Some(at)) = (&i.resolved_by, i.resolved_at) {
                let _ = write!(
                    b,
                    "<li>Resolved by {} at {}: {}</li>",
                    escape(dir.name(by)),
                    when(at),
                    escape(i.resolution.as_deref().unwrap_or(""))
                );
            }
            b.push_str("</ul></div>");
        }
        b.push_str("</section>");
    }

    b.push_str(
        "<section id=\"timeline\"><h2>Timeline</h2><div class=\"card\"><ul class=\"timeline\">",
    );
    // Each entry's detail already names who acted.
    for e in v.audit {
        let _ = write!(
            b,
            "<li><span class=\"muted\">{}</span> {}</li>",
            when(e.at),
            escape(&e.detail)
        );
    }
    b.push_str("</ul></div></section>");
    // The text of the version the run follows, as it was when the run pinned it.
    if !runbook.version.source.is_empty() {
        let _ = write!(
            b,
            "<section id=\"runbook\"><h2>Runbook {}</h2><details><summary>runbooks/{}.toml as this run follows it</summary><pre>{}</pre></details></section>",
            escape(&runbook.label()),
            escape(&runbook.id),
            escape(&runbook.version.source)
        );
    }
    let q = query.map_or(String::new(), |q| format!("?{q}"));
    let _ = write!(
        b,
        "<p class=\"muted\"><a href=\"/runs/{id}/report.md{q}\">Deployment log (Markdown)</a> · <a href=\"/runs/{id}.json{q}\">JSON</a></p>",
        id = run.id,
        q = escape(&q)
    );
    page(
        &format!("{} {} #{} — tminus", run.service, run.version, run.number),
        &b,
    )
}

/// One chart per probe that measures an error rate or a latency.
fn charts(v: &RunView<'_>) -> String {
    let Some(t0) = v.run.t0 else {
        return String::new();
    };
    let ticks: Vec<(f64, Vec<(String, Reading)>)> = v
        .ticks
        .iter()
        .map(|t| {
            (
                (t.tick_at - t0).num_seconds() as f64 / 60.0,
                serde_json::from_str(&t.readings).unwrap_or_default(),
            )
        })
        .collect();
    let mut names: Vec<String> = Vec::new();
    for (_, readings) in &ticks {
        for (n, r) in readings {
            if matches!(r, Reading::ErrorRate(_) | Reading::Latency(_)) && !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let critical = v
        .runbook
        .monitoring
        .as_ref()
        .and_then(|m| m.matrix.iter().find(|r| r.severity == Severity::Critical));
    let mut out = String::new();
    for name in names {
        let mut latency = false;
        let points: Vec<(f64, Option<f64>)> = ticks
            .iter()
            .map(|(x, readings)| {
                let value = readings
                    .iter()
                    .find(|(n, _)| *n == name)
                    .and_then(|(_, r)| match r {
                        Reading::ErrorRate(e) => Some(*e),
                        Reading::Latency(s) => {
                            latency = true;
                            Some(*s)
                        }
                        _ => None,
                    });
                (*x, value)
            })
            .collect();
        if latency {
            let threshold = critical
                .and_then(|r| r.latency_above)
                .map(|d| d.millis() as f64 / 1000.0);
            out.push_str(&line_chart(&name, &points, threshold, |s| {
                format!("{s:.2} s")
            }));
        } else {
            let threshold = critical.and_then(|r| r.error_rate_above);
            out.push_str(&line_chart(&name, &points, threshold, |r| {
                format!("{:.1}%", r * 100.0)
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
