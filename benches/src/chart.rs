//! The chart: one bar per operation, dirmail's rate over the peer's, with parity and each
//! row's target marked. Plain SVG written by hand, so it needs no plotting library and opens
//! in any browser.

use std::fmt::Write as _;

use crate::report::{Report, Target, thousands};

const WIDTH: f64 = 1000.0;
const LABEL: f64 = 230.0;
const BAR_AREA: f64 = 460.0;
const ROW: f64 = 34.0;
const TOP: f64 = 86.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn svg(report: &Report) -> String {
    let rows = &report.rows;
    let height = TOP + ROW * rows.len() as f64 + 60.0;
    let max_ratio = rows
        .iter()
        .filter_map(|r| r.ratio())
        .chain(rows.iter().filter_map(|r| match r.target {
            Some(Target::Ratio { ratio }) => Some(ratio),
            _ => None,
        }))
        .fold(2.0_f64, f64::max)
        * 1.1;
    let x = |ratio: f64| LABEL + BAR_AREA * (ratio / max_ratio).min(1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="24" font-size="16" font-weight="bold">dirmail ÷ peer, same machine, same run ({})</text>
<text x="10" y="44" fill="#555555">bars: dirmail's rate over the peer's; dashed: parity; black tick: the target (green: met, with p99 where it counts)</text>
<text x="10" y="60" fill="#555555">load average at the start {:.2}, at the end {:.2} ({} cores); the servers of a row took turns</text>"##,
        escape(&report.mode),
        report.machine.loadavg_start[0],
        report.machine.loadavg_end[0],
        report.machine.cores
    );
    // Parity and a few grid lines.
    let mut grid = 0.5;
    while grid < max_ratio {
        let gx = x(grid);
        let dash = if (grid - 1.0).abs() < 1e-9 {
            r##" stroke-dasharray="5,3" stroke="#333333""##
        } else {
            r##" stroke="#dddddd""##
        };
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{}" x2="{gx:.1}" y2="{}"{dash}/>
<text x="{gx:.1}" y="{}" text-anchor="middle" fill="#555555">{grid}×</text>"##,
            TOP - 8.0,
            TOP + ROW * rows.len() as f64,
            TOP + ROW * rows.len() as f64 + 16.0
        );
        grid += 0.5;
    }
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL - 8.0,
            y + ROW / 2.0 + 4.0,
            escape(&row.short)
        );
        let Some(ratio) = row.ratio() else {
            let why = match (&row.dirmail, &row.peer) {
                (crate::report::Cell::Measured(_), _) => "peer not measured",
                _ => match &row.dirmail {
                    crate::report::Cell::NotMeasured { reason } => reason.as_str(),
                    _ => "failed",
                },
            };
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{:.1}" fill="#888888" font-style="italic">not measured: {}</text>"##,
                LABEL + 4.0,
                y + ROW / 2.0 + 4.0,
                escape(why)
            );
            continue;
        };
        let want = match row.target {
            Some(Target::Ratio { ratio }) => Some(ratio),
            Some(Target::RatioAndP99) => Some(1.0),
            None => None,
        };
        // Green or red by the whole target (a POP3 row also needs its p99 no worse).
        let colour = match row.met() {
            Some(true) => "#3a9d5d",
            Some(false) => "#d0543f",
            None => "#7d8fa8",
        };
        let _ = writeln!(
            s,
            r#"<rect x="{LABEL}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/>"#,
            y + 6.0,
            (x(ratio) - LABEL).max(1.0),
            ROW - 12.0
        );
        if let Some(w) = want {
            let tx = x(w);
            let _ = writeln!(
                s,
                r##"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#000000" stroke-width="2"/>"##,
                y + 3.0,
                y + ROW - 3.0
            );
        }
        let (d, p) = (row.dirmail.measured(), row.peer.measured());
        let detail = match (d, p) {
            (Some(d), Some(p)) => format!(
                "{ratio:.2}×  ({} vs {} {})",
                thousands(d.rate),
                thousands(p.rate),
                row.unit
            ),
            _ => format!("{ratio:.2}×"),
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            LABEL + BAR_AREA + 8.0,
            y + ROW / 2.0 + 4.0,
            escape(&detail)
        );
    }
    s.push_str("</svg>\n");
    s
}
