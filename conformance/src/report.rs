//! What a run tells its readers: the terminal table, `junit.xml` for CI, `report.md` for people.

use std::fmt::Write as _;
use std::time::Duration;

use crate::run::{Outcome, Verdict};

/// The counts of a run. `XPass` counts as failed; `XFail` as neither passed nor failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub xfailed: usize,
}

impl Counts {
    pub fn of(outcomes: &[Outcome]) -> Counts {
        let mut counts = Counts::default();
        for outcome in outcomes {
            match outcome.verdict {
                Verdict::Pass => counts.passed += 1,
                Verdict::Fail | Verdict::XPass => counts.failed += 1,
                Verdict::XFail => counts.xfailed += 1,
            }
        }
        counts
    }

    /// The last line of the output, in a form scripts may rely on.
    pub fn summary_line(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }

    pub fn xfail_line(&self) -> String {
        let plural = if self.xfailed == 1 { "" } else { "s" };
        format!("{} expected failure{plural}", self.xfailed)
    }
}

/// Why an outcome is not a plain pass, in one line; empty for a pass.
pub fn reason(outcome: &Outcome) -> String {
    let failure = outcome.failure.as_ref().map(|f| f.summary());
    let xfail = outcome.xfail.as_deref().unwrap_or("");
    match outcome.verdict {
        Verdict::Pass => String::new(),
        Verdict::Fail => failure.unwrap_or_default(),
        Verdict::XFail => format!("xfail: {xfail} ({})", failure.unwrap_or_default()),
        Verdict::XPass => format!("passed although marked xfail: {xfail}"),
    }
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.2} s", elapsed.as_secs_f64())
}

/// The terminal table: scenario, rules, result, time.
pub fn table(outcomes: &[Outcome]) -> String {
    let rows: Vec<[String; 4]> = outcomes
        .iter()
        .map(|o| {
            [
                o.id.clone(),
                o.rules.join(","),
                o.verdict.as_str().to_owned(),
                seconds(o.elapsed),
            ]
        })
        .collect();
    let header = ["SCENARIO", "RULES", "RESULT", "TIME"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `junit.xml`: one testsuite, one testcase per scenario. Failures carry the whole story;
/// expected failures are `skipped` with their reason, as CI viewers show those.
pub fn junit(outcomes: &[Outcome]) -> String {
    let counts = Counts::of(outcomes);
    let total: Duration = outcomes.iter().map(|o| o.elapsed).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        r#"<testsuite name="conformance" tests="{}" failures="{}" errors="0" skipped="{}" time="{:.3}">"#,
        outcomes.len(),
        counts.failed,
        counts.xfailed,
        total.as_secs_f64()
    );
    for o in outcomes {
        let _ = write!(
            xml,
            r#"  <testcase name="{}" classname="conformance.{}" time="{:.3}""#,
            escape_xml(&o.id),
            escape_xml(&o.rules.join(".")),
            o.elapsed.as_secs_f64()
        );
        let detail = o
            .failure
            .as_ref()
            .map(|f| f.to_string())
            .unwrap_or_default();
        match o.verdict {
            Verdict::Pass => xml.push_str("/>\n"),
            Verdict::Fail | Verdict::XPass => {
                let _ = write!(
                    xml,
                    ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>\n",
                    escape_xml(&reason(o)),
                    escape_xml(&detail)
                );
            }
            Verdict::XFail => {
                let _ = write!(
                    xml,
                    ">\n    <skipped message=\"{}\">{}</skipped>\n  </testcase>\n",
                    escape_xml(&format!("xfail: {}", o.xfail.as_deref().unwrap_or(""))),
                    escape_xml(&detail)
                );
            }
        }
    }
    xml.push_str("</testsuite>\n");
    xml
}

/// `report.md`: the same table with reasons, then each failure in full.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let counts = Counts::of(outcomes);
    let mut md = String::from("# Conformance report\n\n");
    let _ = writeln!(md, "{}, {}\n", counts.summary_line(), counts.xfail_line());
    md.push_str("| Scenario | Rules | Result | Time | Reason |\n");
    md.push_str("|---|---|---|---:|---|\n");
    for o in outcomes {
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} |",
            o.id,
            o.rules.join(", "),
            o.verdict.as_str(),
            seconds(o.elapsed),
            escape_cell(&reason(o))
        );
    }
    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    if !failures.is_empty() {
        md.push_str("\n## Failures\n");
        for o in failures {
            let detail = o
                .failure
                .as_ref()
                .map(|f| f.to_string())
                .unwrap_or_default();
            let _ = write!(
                md,
                "\n### `{}` ({})\n\n```text\n{}```\n",
                o.id,
                o.verdict.as_str(),
                detail.replace("```", "'''")
            );
        }
    }
    md
}

fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// Escapes text for XML, dropping characters XML 1.0 cannot carry (a program's output may
/// hold any byte).
fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Failure;

    fn outcome(id: &str, verdict: Verdict, xfail: Option<&str>) -> Outcome {
        let failure = matches!(verdict, Verdict::Fail | Verdict::XFail).then(|| Failure {
            step: 2,
            action: "dirmail get authentication".into(),
            problems: vec!["exit code: expected 0, got 3".into()],
            outputs: vec![
                ("stdout".into(), String::new()),
                ("stderr".into(), "dirmail: <no> & \u{1}\n".into()),
            ],
        });
        Outcome {
            id: id.into(),
            rules: vec!["R1".into(), "R2".into()],
            verdict,
            elapsed: Duration::from_millis(1234),
            failure,
            xfail: xfail.map(String::from),
        }
    }

    fn sample() -> Vec<Outcome> {
        vec![
            outcome("admin/a", Verdict::Pass, None),
            outcome("admin/b", Verdict::Fail, None),
            outcome("admin/c", Verdict::XFail, Some("not | yet")),
            outcome("admin/d", Verdict::XPass, Some("fixed?")),
        ]
    }

    #[test]
    fn counts_and_lines() {
        let counts = Counts::of(&sample());
        assert_eq!(
            counts,
            Counts {
                passed: 1,
                failed: 2,
                xfailed: 1
            }
        );
        assert_eq!(counts.summary_line(), "1 passed, 2 failed");
        assert_eq!(counts.xfail_line(), "1 expected failure");
        assert_eq!(Counts::default().xfail_line(), "0 expected failures");
    }

    #[test]
    fn table_aligns_columns() {
        let table = table(&sample()[..2]);
        assert_eq!(
            table,
            "SCENARIO  RULES  RESULT    TIME\n\
             admin/a   R1,R2  PASS    1.23 s\n\
             admin/b   R1,R2  FAIL    1.23 s\n"
        );
    }

    #[test]
    fn junit_is_escaped_and_counts() {
        let xml = junit(&sample());
        assert!(
            xml.contains(r#"tests="4" failures="2" errors="0" skipped="1""#),
            "{xml}"
        );
        assert!(
            xml.contains(
                r#"<testcase name="admin/a" classname="conformance.R1.R2" time="1.234"/>"#
            )
        );
        assert!(xml.contains("<skipped message=\"xfail: not | yet\">"));
        assert!(xml.contains("<failure message=\"passed although marked xfail: fixed?\">"));
        assert!(xml.contains("dirmail: &lt;no&gt; &amp; \u{fffd}"));
        assert!(!xml.contains('\u{1}'));
        assert_eq!(xml.matches("<testcase").count(), 4);
    }

    #[test]
    fn markdown_has_reasons_and_details() {
        let md = markdown(&sample());
        assert!(md.contains("1 passed, 2 failed, 1 expected failure\n"));
        assert!(md.contains("| `admin/a` | R1, R2 | PASS | 1.23 s |  |"));
        assert!(md.contains(
            "| `admin/b` | R1, R2 | FAIL | 1.23 s | step 2: dirmail get authentication: exit code: expected 0, got 3 |"
        ));
        assert!(md.contains("| XFAIL | 1.23 s | xfail: not \\| yet (step 2:"));
        assert!(md.contains("### `admin/b` (FAIL)"));
    }
}
