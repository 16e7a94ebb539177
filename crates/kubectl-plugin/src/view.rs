//! The `status` view of one rollout: steps, weight, time left, the last analysis side by side
//! against its limits, conditions, recent events and sparklines of the analysis history.
//!
//! Pure: it renders a rollout, its events and "now" to text. On a terminal it uses colour and
//! relative times (redrawn every second); piped, it prints plain ASCII with absolute times only,
//! so the same state always gives the same block and a log gets one block per change.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use modelrollout_api::rollout::{Analysis, AnalysisPoint};
use modelrollout_api::{ModelRollout, Phase, StepAction, Verdict};

use crate::request::{object_name, pending_requests, phase_of};
use crate::sparkline::sparkline;

/// How many events the view shows.
pub const EVENTS_SHOWN: usize = 6;

/// One Kubernetes Event about the rollout, as the view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLine {
    /// When it (last) happened.
    pub time: Option<Timestamp>,
    /// `type: Warning` (else Normal).
    pub warning: bool,
    /// The machine-readable reason, e.g. `StepAdvanced`.
    pub reason: String,
    /// The text.
    pub message: String,
}

impl EventLine {
    /// From a core/v1 Event (events.k8s.io/v1 Events are served through core/v1 as well).
    pub fn from_event(event: &Event) -> Self {
        let time = event
            .event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
            .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
            .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0));
        EventLine {
            time,
            warning: event.type_.as_deref() == Some("Warning"),
            reason: event.reason.clone().unwrap_or_default(),
            message: event.message.clone().unwrap_or_default().trim().to_owned(),
        }
    }
}

/// Where the view goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours and Unicode marks.
    pub colour: bool,
    /// Relative times ("3m12s left"), which change every second: only for a terminal.
    pub relative_times: bool,
}

impl Style {
    /// A terminal: colour (unless `NO_COLOR`) and live times.
    pub const TERMINAL: Style = Style { colour: true, relative_times: true };
    /// A pipe or file: plain text, absolute times.
    pub const PLAIN: Style = Style { colour: false, relative_times: false };
}

// === colours ===

#[derive(Clone, Copy)]
enum Paint {
    Bold,
    Dim,
    Green,
    Red,
    Yellow,
    Cyan,
}

impl Style {
    fn paint(self, paint: Paint, text: impl std::fmt::Display) -> String {
        if !self.colour {
            return text.to_string();
        }
        let code = match paint {
            Paint::Bold => "1",
            Paint::Dim => "2",
            Paint::Green => "32",
            Paint::Red => "31",
            Paint::Yellow => "33",
            Paint::Cyan => "36",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    fn phase(self, phase: Phase) -> String {
        let paint = match phase {
            Phase::Promoted => Paint::Green,
            Phase::RolledBack | Phase::Failed => Paint::Red,
            Phase::Paused => Paint::Yellow,
            Phase::Pending | Phase::Progressing => Paint::Cyan,
        };
        self.paint(paint, phase)
    }

    fn check(self, check: Check) -> String {
        match check {
            Check::Pass => self.paint(Paint::Green, "pass"),
            Check::Fail => self.paint(Paint::Red, "FAIL"),
            Check::Wait => self.paint(Paint::Yellow, "wait"),
            Check::None => "-".to_owned(),
        }
    }

    fn time(self, time: Timestamp, now: Timestamp) -> String {
        if self.relative_times {
            format!("{} ago", human(now.duration_since(time)))
        } else {
            time.to_string()
        }
    }
}

// === formatting helpers ===

/// `3h0m30s`, `42s`, `0s` (negative durations count as zero).
pub fn human(duration: SignedDuration) -> String {
    let secs = duration.as_secs().max(0);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Kubernetes-style age: `45s`, `12m`, `3h`, `2d`.
pub fn age(since: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(since).as_secs().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// `0.70%`.
pub fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

/// `310ms` or `1.20s`.
pub fn seconds(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) => format!("{s:.2}s"),
    }
}

fn step_label(action: Option<StepAction>) -> String {
    match action {
        Some(StepAction::SetWeight(w)) => format!("{w}%"),
        Some(StepAction::PauseFor(d)) => format!("pause {d}"),
        Some(StepAction::PauseUntilPromoted) => "pause (promote)".to_owned(),
        None => "?".to_owned(),
    }
}

// === the view ===

/// Renders the whole status view; ends with a newline.
pub fn render_status(
    rollout: &ModelRollout,
    events: &[EventLine],
    now: Timestamp,
    style: Style,
) -> String {
    let mut out = String::new();
    let status = rollout.status.clone().unwrap_or_default();
    let spec = &rollout.spec;
    let phase = phase_of(rollout);
    let steps = &spec.strategy.steps;
    let index = status.current_step_index.and_then(|i| usize::try_from(i).ok());
    let weight = status.canary_weight.unwrap_or(0);
    let bold = |text: &str| style.paint(Paint::Bold, text);

    let _ = writeln!(out, "{} {}", bold("ModelRollout"), bold(&object_name(rollout)));
    let _ = writeln!(
        out,
        "  alias {}: stable {} ({}) -> canary {} ({})",
        spec.model,
        spec.stable.model,
        spec.stable.endpoint,
        spec.canary.model,
        spec.canary.endpoint
    );
    let step_text = match index {
        Some(i) => format!("step {}/{}", (i + 1).min(steps.len()), steps.len()),
        None => format!("{} steps", steps.len()),
    };
    let _ = writeln!(
        out,
        "  phase {}   weight {weight}% {}   {step_text}",
        style.phase(phase),
        weight_bar(weight, style)
    );
    if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
        let _ = writeln!(out, "  {message}");
    }
    if rollout.metadata.generation.is_some_and(|g| status.observed_generation != Some(g)) {
        let _ = writeln!(
            out,
            "  {}",
            style.paint(Paint::Yellow, "the controller has not seen the latest spec yet")
        );
    }

    // Steps, with the current one marked.
    let marks = steps.iter().enumerate().map(|(i, step)| {
        let label = step_label(step.action());
        let state = match index {
            _ if phase == Phase::Promoted => StepState::Done,
            Some(current) if i < current => StepState::Done,
            Some(current) if i == current => {
                if matches!(phase, Phase::RolledBack | Phase::Failed) {
                    StepState::Failed
                } else {
                    StepState::Current
                }
            }
            _ => StepState::Ahead,
        };
        state.mark(&label, style)
    });
    let _ = writeln!(out, "  steps {}", marks.collect::<Vec<_>>().join(" "));

    // Time left in a pause, or to the next check.
    for line in timing_lines(rollout, index, phase, now, style) {
        let _ = writeln!(out, "  {line}");
    }
    for (key, value) in pending_requests(rollout) {
        let _ = writeln!(out, "  requested: {key}={value:?} (not handled yet)");
    }

    // The last analysis, canary and stable side by side.
    out.push('\n');
    match &status.last_analysis {
        None => {
            let _ = writeln!(out, "{} none yet", bold("Analysis"));
        }
        Some(last) => {
            let verdict = match last.verdict {
                Verdict::Pass => style.paint(Paint::Green, last.verdict),
                Verdict::Fail | Verdict::Error => style.paint(Paint::Red, last.verdict),
                Verdict::Inconclusive => style.paint(Paint::Yellow, last.verdict),
            };
            let failures = format!(
                "{} of {} failed checks in a row",
                status.consecutive_failures.unwrap_or(0),
                spec.analysis.failure_limit
            );
            let _ = writeln!(
                out,
                "{} {verdict} {}, {failures}",
                bold("Analysis"),
                if style.relative_times {
                    style.time(last.time.0, now)
                } else {
                    format!("at {}", last.time.0)
                }
            );
            if let Some(message) = last.message.as_deref().filter(|m| !m.is_empty()) {
                let _ = writeln!(out, "  {message}");
            }
            let rows = analysis_rows(&spec.analysis, last);
            let table: Vec<[String; 5]> =
                std::iter::once(["", "CANARY", "STABLE", "LIMIT", "CHECK"].map(str::to_owned))
                    .chain(rows.into_iter().map(|row| {
                        [row.name, row.canary, row.stable, row.limit, style.check(row.check)]
                    }))
                    .collect();
            out.push_str(&columns(&table, "  "));
            for failed in &last.failed_checks {
                let _ = writeln!(
                    out,
                    "  {} {}: {}",
                    style.paint(Paint::Red, "failed"),
                    failed.name,
                    failed.message
                );
            }
        }
    }

    // Conditions.
    if !status.conditions.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "{}", bold("Conditions"));
        let table: Vec<[String; 4]> = status
            .conditions
            .iter()
            .map(|c| {
                let state = match c.status.as_str() {
                    "True" => style.paint(Paint::Green, "True"),
                    "False" => style.paint(Paint::Red, "False"),
                    other => other.to_owned(),
                };
                [c.type_.clone(), state, c.reason.clone(), c.message.clone()]
            })
            .collect();
        out.push_str(&columns(&table, "  "));
    }

    // The last few events.
    out.push('\n');
    let _ = writeln!(out, "{}", bold("Events"));
    if events.is_empty() {
        let _ = writeln!(out, "  none");
    }
    let mut recent: Vec<&EventLine> = events.iter().collect();
    recent.sort_by_key(|e| e.time);
    let skip = recent.len().saturating_sub(EVENTS_SHOWN);
    let table: Vec<[String; 3]> = recent[skip..]
        .iter()
        .map(|e| {
            let time = e.time.map_or_else(|| "-".to_owned(), |t| style.time(t, now));
            let reason =
                if e.warning { style.paint(Paint::Red, &e.reason) } else { e.reason.clone() };
            [time, reason, e.message.clone()]
        })
        .collect();
    out.push_str(&columns(&table, "  "));

    // Sparklines of the history: canary against stable on one scale.
    if !status.history.is_empty() {
        out.push('\n');
        out.push_str(&history(&status.history, style));
    }
    out
}

#[derive(Clone, Copy)]
enum StepState {
    Done,
    Current,
    Failed,
    Ahead,
}

impl StepState {
    fn mark(self, label: &str, style: Style) -> String {
        match (self, style.colour) {
            (StepState::Done, true) => style.paint(Paint::Green, format!("✓{label}")),
            (StepState::Current, true) => style.paint(Paint::Bold, format!("▶[{label}]")),
            (StepState::Failed, true) => style.paint(Paint::Red, format!("✗[{label}]")),
            (StepState::Ahead, true) => style.paint(Paint::Dim, format!("·{label}")),
            (StepState::Done, false) => format!("+{label}"),
            (StepState::Current, false) => format!(">[{label}]"),
            (StepState::Failed, false) => format!("x[{label}]"),
            (StepState::Ahead, false) => format!("-{label}"),
        }
    }
}

/// `[#####...............]`: twenty cells, one per 5 %.
fn weight_bar(weight: i32, style: Style) -> String {
    let filled = usize::try_from(weight.clamp(0, 100) / 5).unwrap_or(0);
    let (on, off) = if style.colour { ("█", "░") } else { ("#", ".") };
    format!("[{}{}]", on.repeat(filled), off.repeat(20 - filled))
}

fn timing_lines(
    rollout: &ModelRollout,
    index: Option<usize>,
    phase: Phase,
    now: Timestamp,
    style: Style,
) -> Vec<String> {
    let name = rollout.name_any();
    let status = rollout.status.clone().unwrap_or_default();
    let step = index.and_then(|i| rollout.spec.strategy.steps.get(i)).and_then(|s| s.action());
    let started = status.step_started_at.as_ref().map(|t| t.0);
    let at = |end: Timestamp| {
        if style.relative_times {
            format!("{} left (until {end})", human(end.duration_since(now)))
        } else {
            format!("until {end}")
        }
    };
    let mut lines = Vec::new();
    if phase.is_terminal() {
        return lines;
    }
    if rollout.spec.paused {
        lines
            .push(format!("paused by spec.paused: `kubectl modelrollout resume {name}` continues"));
        return lines;
    }
    match (step, started) {
        (Some(StepAction::PauseFor(duration)), Some(started)) => {
            let end = started
                .checked_add(SignedDuration::try_from(duration.as_std()).unwrap_or_default())
                .unwrap_or(started);
            lines.push(format!("pause {}", at(end)));
        }
        (Some(StepAction::PauseUntilPromoted), _) => lines
            .push(format!("waiting for a manual promote: `kubectl modelrollout promote {name}`")),
        (Some(StepAction::SetWeight(_)), _) | (None, _) => {
            let last = status.last_analysis.as_ref().map(|a| a.time.0).or(started);
            if let Some(last) = last {
                let interval = rollout.spec.analysis.interval.as_std();
                let next = last
                    .checked_add(SignedDuration::try_from(interval).unwrap_or_default())
                    .unwrap_or(last);
                let when = if style.relative_times {
                    format!("in {} (at {next})", human(next.duration_since(now)))
                } else {
                    format!("at {next}")
                };
                lines.push(format!("next check {when}"));
            }
        }
        (Some(StepAction::PauseFor(_)), None) => {}
    }
    lines
}

/// One row of the analysis table.
struct Row {
    name: String,
    canary: String,
    stable: String,
    limit: String,
    check: Check,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Pass,
    Fail,
    Wait,
    None,
}

fn at_most(value: Option<f64>, limit: f64) -> Check {
    match value {
        Some(v) if v <= limit => Check::Pass,
        Some(_) => Check::Fail,
        None => Check::None,
    }
}

fn analysis_rows(analysis: &Analysis, last: &modelrollout_api::AnalysisResult) -> Vec<Row> {
    let (canary, stable) = (&last.canary, &last.stable);
    let thresholds = &analysis.thresholds;
    let mut rows = vec![
        Row {
            name: "requests".into(),
            canary: canary.requests.to_string(),
            stable: stable.requests.to_string(),
            limit: format!(">= {}", analysis.min_requests),
            check: if canary.requests >= analysis.min_requests { Check::Pass } else { Check::Wait },
        },
        Row {
            name: "error rate".into(),
            canary: percent(canary.error_rate),
            stable: percent(stable.error_rate),
            limit: format!("<= {}", percent(Some(thresholds.max_error_rate))),
            check: at_most(canary.error_rate, thresholds.max_error_rate),
        },
    ];
    if let Some(increase) = thresholds.max_error_rate_increase {
        let difference = canary.error_rate.zip(stable.error_rate).map(|(c, s)| c - s);
        rows.push(Row {
            name: "error rate - stable".into(),
            canary: difference.map_or_else(|| "-".into(), |d| format!("{:+.2}%", d * 100.0)),
            stable: String::new(),
            limit: format!("<= {}", percent(Some(increase))),
            check: at_most(difference, increase),
        });
    }
    let latency_limit = thresholds.max_latency_p95;
    rows.push(Row {
        name: "p95 latency".into(),
        canary: seconds(canary.latency_p95_seconds),
        stable: seconds(stable.latency_p95_seconds),
        limit: format!("<= {latency_limit}"),
        check: at_most(canary.latency_p95_seconds, latency_limit.as_std().as_secs_f64()),
    });
    let ttft_limit = thresholds.max_time_to_first_token_p95;
    rows.push(Row {
        name: "p95 TTFT".into(),
        canary: seconds(canary.time_to_first_token_p95_seconds),
        stable: seconds(stable.time_to_first_token_p95_seconds),
        limit: ttft_limit.map_or_else(String::new, |l| format!("<= {l}")),
        check: ttft_limit.map_or(Check::None, |l| {
            at_most(canary.time_to_first_token_p95_seconds, l.as_std().as_secs_f64())
        }),
    });
    for metric in &analysis.metrics {
        let value = last.metrics.iter().find(|m| m.name == metric.name).and_then(|m| m.value);
        let limit = match (metric.min, metric.max) {
            (Some(min), Some(max)) => format!("{min} .. {max}"),
            (Some(min), None) => format!(">= {min}"),
            (None, Some(max)) => format!("<= {max}"),
            (None, None) => String::new(),
        };
        let inside = value.map(|v| {
            metric.min.is_none_or(|min| v >= min) && metric.max.is_none_or(|max| v <= max)
        });
        rows.push(Row {
            name: metric.name.clone(),
            canary: value.map_or_else(|| "-".into(), |v| format!("{v}")),
            stable: String::new(),
            limit,
            check: match inside {
                Some(true) => Check::Pass,
                Some(false) => Check::Fail,
                None => Check::None,
            },
        });
    }
    rows
}

/// A sparkline pair: name, canary series, stable series, how to print a value.
type Chart = (&'static str, Vec<Option<f64>>, Vec<Option<f64>>, fn(Option<f64>) -> String);

fn history(points: &[AnalysisPoint], style: Style) -> String {
    let mut out = String::new();
    let (first, last) = (&points[0].time.0, &points[points.len() - 1].time.0);
    let _ = writeln!(
        out,
        "{} {} checks, {first} .. {last}",
        style.paint(Paint::Bold, "History"),
        points.len()
    );
    let series = |f: fn(&AnalysisPoint) -> Option<f64>| points.iter().map(f).collect::<Vec<_>>();
    let charts: [Chart; 2] = [
        ("error rate", series(|p| p.canary_error_rate), series(|p| p.stable_error_rate), percent),
        (
            "p95 latency",
            series(|p| p.canary_latency_p95_seconds),
            series(|p| p.stable_latency_p95_seconds),
            seconds,
        ),
    ];
    let mut table = Vec::new();
    for (name, canary, stable, format) in charts {
        let top = canary.iter().chain(&stable).flatten().copied().fold(0.0_f64, f64::max);
        let last_of = |s: &[Option<f64>]| format(s.last().copied().flatten());
        table.push([
            name.to_owned(),
            "canary".to_owned(),
            sparkline(&canary, top, style.colour),
            format!("now {}, max {}", last_of(&canary), format(Some(top))),
        ]);
        table.push([
            String::new(),
            "stable".to_owned(),
            sparkline(&stable, top, style.colour),
            format!("now {}", last_of(&stable)),
        ]);
    }
    out.push_str(&columns(&table, "  "));
    let weights: Vec<String> = points.iter().map(|p| p.canary_weight.to_string()).collect();
    let _ = writeln!(out, "  weights {}", weights.join(" "));
    out
}

/// Left-aligned columns, two spaces apart, each line starting with `indent`; widths ignore
/// ANSI colour codes.
pub fn columns<const N: usize>(rows: &[[String; N]], indent: &str) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(visible_width(cell));
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_owned();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                line.push_str(&" ".repeat(width - visible_width(cell) + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{events, now, rollout, with_phase};
    use crate::snapshot::assert_snapshot;

    /// Piped: plain ASCII, absolute times; the whole view of the fixture.
    #[test]
    fn status_piped_snapshot() {
        let text = render_status(&rollout(), &events(), now(), Style::PLAIN);
        assert!(text.is_ascii(), "piped output is plain ASCII");
        assert_snapshot("status_piped", &text);
    }

    /// On a terminal: colours, Unicode marks, times relative to now.
    #[test]
    fn status_terminal_snapshot() {
        let text = render_status(&rollout(), &events(), now(), Style::TERMINAL);
        assert!(text.contains("\x1b[32mpass\x1b[0m"));
        assert!(text.contains("3h0m30s left"), "pause ends at 13:00, now is 09:59:30");
        assert_snapshot("status_terminal", &text);
    }

    /// A rolled-back rollout marks its step failed, lists the failed checks and shows no timer.
    #[test]
    fn status_rolled_back_snapshot() {
        let mut r = with_phase(rollout(), Phase::RolledBack);
        let status = r.status.as_mut().unwrap();
        status.canary_weight = Some(0);
        status.current_step_index = Some(2);
        let last = status.last_analysis.as_mut().unwrap();
        last.verdict = Verdict::Fail;
        last.canary.error_rate = Some(0.091);
        last.failed_checks = vec![modelrollout_api::rollout::FailedCheck {
            name: "error-rate".into(),
            reason: "ErrorRateExceeded".into(),
            value: Some(0.091),
            limit: Some(0.05),
            message: "canary error rate 9.10% > 5.00% (stable 0.60%) in 2 consecutive checks"
                .into(),
        }];
        let text = render_status(&r, &[], now(), Style::PLAIN);
        assert!(text.contains("x[25%]"));
        assert!(!text.contains("pause until"));
        assert_snapshot("status_rolled_back", &text);
    }

    /// The same state renders the same piped block whatever the time: logs get one per change.
    #[test]
    fn piped_output_does_not_depend_on_now() {
        let later = now().checked_add(SignedDuration::from_secs(17)).unwrap();
        assert_eq!(
            render_status(&rollout(), &events(), now(), Style::PLAIN),
            render_status(&rollout(), &events(), later, Style::PLAIN)
        );
    }

    /// Durations, ages and rates are formatted the way the view promises.
    #[test]
    fn formats() {
        assert_eq!(human(SignedDuration::from_secs(10830)), "3h0m30s");
        assert_eq!(human(SignedDuration::from_secs(-5)), "0s");
        assert_eq!(human(SignedDuration::from_secs(75)), "1m15s");
        let t0: Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
        let at = |s| t0.checked_add(SignedDuration::from_secs(s)).unwrap();
        assert_eq!(age(t0, at(59)), "59s");
        assert_eq!(age(t0, at(3599)), "59m");
        assert_eq!(age(t0, at(7200)), "2h");
        assert_eq!(age(t0, at(200_000)), "2d");
        assert_eq!(percent(Some(0.007)), "0.70%");
        assert_eq!(seconds(Some(0.31)), "310ms");
        assert_eq!(seconds(Some(1.2)), "1.20s");
        assert_eq!(weight_bar(25, Style::PLAIN), "[#####...............]");
    }
}
