//! What the CLI writes to stderr besides its summaries: logs (warnings by
//! default) and progress bars, which must not draw over each other.
//!
//! Every bar is one of [`bars`], and each log line is written with the
//! bars lifted ([`indicatif::MultiProgress::suspend`]): a warning printed
//! while `recover` spins stays on the screen. Bars are drawn only on a
//! terminal, logs are coloured only on a terminal (and not under
//! `NO_COLOR`): a log file or a pipe gets plain text.

use std::io::{IsTerminal as _, Write};
use std::sync::OnceLock;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// The filter when `WALHOUSE_LOG` is not set: warnings and errors.
const DEFAULT_LOG: &str = "warn";

/// The progress bars of this process.
pub(crate) fn bars() -> &'static indicatif::MultiProgress {
    static BARS: OnceLock<indicatif::MultiProgress> = OnceLock::new();
    BARS.get_or_init(indicatif::MultiProgress::new)
}

/// A spinner with `message` (drawn only on a terminal: quiet in pipes).
pub(crate) fn spinner(message: &str) -> indicatif::ProgressBar {
    let bar = bars().add(indicatif::ProgressBar::new_spinner());
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Writes each log line to stderr with the progress bars lifted.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole line per call.
        bars().suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logs to stderr: warnings and errors unless `WALHOUSE_LOG` gives another
/// filter (`info`, `debug`, `walhouse=debug,warn`, `off`, ...).
pub(crate) fn init_logs() {
    let given = std::env::var("WALHOUSE_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (filter, refused) = match given.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (EnvFilter::new(DEFAULT_LOG), Some(e)),
        None => (EnvFilter::new(DEFAULT_LOG), None),
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .init();
    if let (Some(e), Some(given)) = (refused, given) {
        tracing::warn!(
            "WALHOUSE_LOG={given} is not a log filter ({e}); showing warnings and errors"
        );
    }
}
