//! The attempt report on stderr: readable text, or one JSON object.

use fallback_chain::Report;

use fallback_chain::report::millis as ms;

/// One line per attempt, then a summary.
pub fn text(report: &Report, status: Option<u16>) -> String {
    let mut out = String::new();
    let width = report
        .attempts()
        .iter()
        .map(|a| a.name().len())
        .max()
        .unwrap_or(0);
    for a in report.attempts() {
        let status = a
            .status()
            .map_or("-".to_string(), |s| s.as_u16().to_string());
        let outcome = match a.phase() {
            Some(p) => format!("{} ({p})", a.outcome()),
            None => a.outcome().to_string(),
        };
        out.push_str(&format!(
            "[{}] {:<width$}  try {}  {:<17} {:>3}  {:>9}",
            a.link(),
            a.name(),
            a.try_number(),
            outcome,
            status,
            format!("{:.1?}", a.elapsed()),
        ));
        if let Some(e) = a.error() {
            out.push_str("  ");
            out.push_str(e);
        }
        if a.insecure() {
            out.push_str("  [insecure: certificate not verified]");
        }
        out.push('\n');
    }
    match (report.winner(), status) {
        (Some(w), Some(s)) => out.push_str(&format!(
            "=> {s} from link {w} in {:.1?}\n",
            report.elapsed()
        )),
        _ => out.push_str(&format!(
            "=> no link succeeded ({:.1?})\n",
            report.elapsed()
        )),
    }
    out
}

/// The one-line JSON object of `--report json`.
pub fn json(report: &Report, status: Option<u16>) -> String {
    let attempts: Vec<_> = report
        .attempts()
        .iter()
        .map(|a| {
            let mut line = a.to_json();
            // The field's name before the shared shape; kept for one
            // release, so scripts that read it keep working.
            line["endpoint"] = a.link().into();
            line
        })
        .collect();
    serde_json::json!({
        "ok": report.winner().is_some(),
        "winner": report.winner(),
        "status": status,
        "elapsed_ms": ms(report.elapsed()),
        "attempts": attempts,
    })
    .to_string()
}
