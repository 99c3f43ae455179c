//! Progress bars on stderr for work that takes longer than a moment.
//!
//! A bar stays hidden for its first quarter second, so quick commands print nothing but
//! their result, and indicatif hides it altogether when stderr is not a terminal (in pipes,
//! scripts and tests).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How long work runs before its bar appears.
const SHOW_AFTER: Duration = Duration::from_millis(250);

/// What a bar counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit {
    Records,
    Bytes,
}

/// A bar that appears once the work has run for [`SHOW_AFTER`].
pub(crate) struct Progress {
    bar: ProgressBar,
    started: Instant,
    visible: bool,
    unit: Unit,
    /// Whether the style in use shows a total (`None`: no style set yet).
    styled_with_total: Option<bool>,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are fixed strings: a bad one is a bug, shown as the default style.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
        // Records per second as a whole number with separators (`{per_sec}` shows 4 decimals).
        .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}/s", crate::human::count(state.per_sec() as u64));
        })
}

impl Progress {
    /// A bar for `message` (e.g. "copying"), hidden for now.
    pub(crate) fn new(message: &str, unit: Unit) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_message(message.to_owned());
        Progress { bar, started: Instant::now(), visible: false, unit, styled_with_total: None }
    }

    /// A spinner for work that reports no progress, shown at once (when stderr is a terminal).
    pub(crate) fn spinner(message: &str) -> Progress {
        let mut progress = Progress::new(message, Unit::Records);
        progress.bar.set_style(style("{spinner} {msg} {elapsed}"));
        progress.styled_with_total = Some(false);
        progress.show();
        progress
    }

    fn show(&mut self) {
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
        self.bar.enable_steady_tick(Duration::from_millis(100));
        self.visible = true;
    }

    /// `done` of `total` (if known) so far; `message` names the current part of the work.
    pub(crate) fn set(&mut self, done: u64, total: Option<u64>, message: Option<&str>) {
        if !self.visible && self.started.elapsed() >= SHOW_AFTER {
            self.show();
        }
        if self.styled_with_total != Some(total.is_some()) {
            let template = match (self.unit, total.is_some()) {
                (Unit::Records, true) => {
                    "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} records ({rate}, {eta} left)"
                }
                (Unit::Records, false) => "{spinner} {msg} {human_pos} records ({rate}) {elapsed}",
                (Unit::Bytes, true) => "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
                (Unit::Bytes, false) => "{spinner} {msg} {bytes} ({bytes_per_sec}) {elapsed}",
            };
            self.bar.set_style(style(template));
            self.styled_with_total = Some(total.is_some());
        }
        if let Some(total) = total {
            self.bar.set_length(total.max(done));
        }
        if let Some(message) = message {
            self.bar.set_message(message.to_owned());
        }
        self.bar.set_position(done);
    }

    /// Removes the bar, so the summary follows on a clean line.
    pub(crate) fn finish(self) {
        self.bar.finish_and_clear();
    }
}
