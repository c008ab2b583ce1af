//! Log output: `tracing` events to stderr.
//!
//! Under systemd (stderr is the journal stream named by `JOURNAL_STREAM`)
//! lines carry the sd-daemon priority prefix (`<3>` error … `<7>` debug) and
//! no timestamp or colour, so journald keeps the levels; otherwise a normal
//! human format. The level comes from the config; `RUST_LOG` overrides it.

use crate::config::LogLevel;
use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The sd-daemon(3) priority of a level.
pub fn journal_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Formats `<P>span: span: message field=value` lines for journald.
#[derive(Debug, Default, Clone, Copy)]
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", journal_priority(event.metadata().level()))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}: ", span.name())?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Whether stderr is the journal stream systemd told us about
/// (`JOURNAL_STREAM=<dev>:<inode>` and fstat(2) agrees).
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: a zeroed stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd 2 and a valid, writable stat buffer.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// The filter: `RUST_LOG` if set and valid, else `level`. The second value
/// is a complaint about an invalid `RUST_LOG`, to log once logging is up.
pub fn filter(level: LogLevel) -> (EnvFilter, Option<String>) {
    match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => match EnvFilter::try_new(&s) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(level.as_str()),
                Some(format!("ignoring invalid RUST_LOG {s:?}: {e}")),
            ),
        },
        _ => (EnvFilter::new(level.as_str()), None),
    }
}

/// A subscriber writing to `writer`, journald-style or human-style.
pub fn subscriber<W>(
    filter: EnvFilter,
    journald: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if journald {
        Box::new(
            builder
                .with_ansi(false)
                .event_format(JournalFormat)
                .finish(),
        )
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Box::new(builder.with_ansi(ansi).with_target(false).finish())
    }
}

/// Installs the global subscriber on stderr. Call once, early.
pub fn init(level: LogLevel) {
    let (filter, complaint) = filter(level);
    let sub = subscriber(filter, stderr_is_journal(), std::io::stderr);
    if tracing::subscriber::set_global_default(sub).is_err() {
        // Already set (tests, embedding): keep the existing one.
        return;
    }
    if let Some(c) = complaint {
        tracing::warn!("{c}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(journald: bool, level: LogLevel) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = subscriber(EnvFilter::new(level.as_str()), journald, move || {
            out.clone()
        });
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("boot");
            let _g = span.enter();
            tracing::error!(code = 7, "disk gone");
            tracing::warn!("hot");
            tracing::info!("ready");
            tracing::debug!("detail");
        });
        let v = buf.0.lock().unwrap().clone();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn journald_lines_carry_priorities_and_no_timestamps() {
        let out = capture(true, LogLevel::Debug);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].starts_with("<3>boot: disk gone"), "{out}");
        assert!(lines[0].contains("code=7"), "{out}");
        assert!(lines[1].starts_with("<4>"), "{out}");
        assert!(lines[2].starts_with("<6>"), "{out}");
        assert!(lines[3].starts_with("<7>"), "{out}");
        assert!(!out.contains('\x1b'), "no ANSI: {out}");
    }

    #[test]
    fn level_filters_and_human_format_has_no_prefix() {
        let out = capture(false, LogLevel::Warn);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains("ERROR") && out.contains("disk gone"), "{out}");
        assert!(!out.contains("<3>"), "{out}");
        assert!(!out.contains("ready"), "{out}");
    }

    #[test]
    fn priorities() {
        assert_eq!(journal_priority(&Level::ERROR), 3);
        assert_eq!(journal_priority(&Level::WARN), 4);
        assert_eq!(journal_priority(&Level::INFO), 6);
        assert_eq!(journal_priority(&Level::DEBUG), 7);
        assert_eq!(journal_priority(&Level::TRACE), 7);
    }

    #[test]
    fn journal_stream_must_match_stderr() {
        // The test's stderr is not the journal; a bogus value must not fool us.
        // (Reading the env only; not setting it, tests run in parallel.)
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_journal());
        }
    }
}
