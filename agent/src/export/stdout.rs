//! The stdout sink: findings as JSON lines, or one readable line each.

use std::io::{IsTerminal, Write};

use serde::{Deserialize, Serialize};

use super::{ExportError, Sink};
use crate::detect::finding::format_time;
use crate::detect::Finding;

/// How findings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Text on a terminal, JSON lines otherwise.
    #[default]
    Auto,
    /// One readable line per finding.
    Text,
    /// One JSON object per line.
    Json,
}

/// Prints findings to a writer (standard output in the agent).
pub struct StdoutSink {
    json: bool,
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink")
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

impl StdoutSink {
    /// A sink on standard output; `Auto` picks text on a terminal, JSON otherwise.
    pub fn stdout(format: OutputFormat) -> Self {
        let json = match format {
            OutputFormat::Json => true,
            OutputFormat::Text => false,
            OutputFormat::Auto => !std::io::stdout().is_terminal(),
        };
        StdoutSink {
            json,
            out: Box::new(std::io::stdout()),
        }
    }

    /// A sink on any writer.
    pub fn new(json: bool, out: Box<dyn Write + Send>) -> Self {
        StdoutSink { json, out }
    }
}

/// One readable line: time, severity, kind, subject, summary, hint, repeat count.
pub fn render_text(f: &Finding) -> String {
    let repeats = if f.count > 1 {
        format!(" [seen {} times since {}]", f.count, format_time(f.first_seen))
    } else {
        String::new()
    };
    format!(
        "{} {:<8} {}{} {}: {}. Hint: {}{}",
        format_time(f.last_seen),
        f.severity.to_string(),
        f.kind.as_str(),
        if f.resolved { " (resolved)" } else { "" },
        f.subject,
        f.summary,
        f.hint,
        repeats
    )
}

impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn export(&mut self, finding: &Finding) -> Result<(), ExportError> {
        let line = if self.json {
            serde_json::to_string(finding).map_err(|e| ExportError::Io {
                sink: "stdout",
                source: std::io::Error::other(e),
            })?
        } else {
            render_text(finding)
        };
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(|source| ExportError::Io {
                sink: "stdout",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Evidence, EvidenceSource, FindingKind, Severity, Subject};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn finding() -> Finding {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        Finding {
            kind: FindingKind::ContainerExited,
            severity: Severity::Warning,
            subject: Subject::Container {
                node: "n1".into(),
                namespace: "shop".into(),
                pod: "web-0".into(),
                pod_uid: "u".into(),
                container: "app".into(),
                container_id: "c1".into(),
                attempt: 1,
            },
            summary: "container app of pod shop/web-0 exited with code 3 (application error)".into(),
            evidence: vec![
                Evidence::new(EvidenceSource::Cri, Some(at), "ContainerStatus").with("exit_code", 3)
            ],
            hint: "read its logs".into(),
            fingerprint: "0123456789abcdef".into(),
            first_seen: at - Duration::from_secs(60),
            last_seen: at,
            count: 2,
            resolved: false,
            owner: None,
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let buf = Buf::default();
        let mut sink = StdoutSink::new(true, Box::new(buf.clone()));
        sink.export(&finding()).expect("export");
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        assert!(text.ends_with('\n') && text.lines().count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["kind"], "ContainerExited");
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["subject"]["scope"], "container");
        assert_eq!(v["subject"]["namespace"], "shop");
        assert_eq!(v["subject"]["attempt"], 1);
        assert_eq!(v["evidence"][0]["source"], "cri");
        assert_eq!(v["evidence"][0]["attributes"]["exit_code"], 3);
        assert_eq!(v["last_seen"], "2023-11-14T22:13:20.250000Z");
        assert_eq!(v["count"], 2);
    }

    #[test]
    fn text_is_one_readable_line() {
        let line = render_text(&finding());
        assert_eq!(
            line,
            "2023-11-14T22:13:20.250000Z WARNING  ContainerExited shop/web-0[app]: container app of pod shop/web-0 \
             exited with code 3 (application error). Hint: read its logs [seen 2 times since 2023-11-14T22:12:20.250000Z]"
        );
    }
}
