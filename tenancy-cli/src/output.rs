//! Printing results: aligned tables (display widths, fitted to the
//! terminal) or JSON, colour only where [`crate::Io`] allows it.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tenancy_core::{Tenant, TenantStatus};
use tenancy_server::views::TenantView;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::cli::OutputFormat;
use crate::io::Io;

/// Writes results to stdout in the chosen format.
pub(crate) struct Out<'a> {
    w: &'a mut dyn Write,
    /// The output format.
    pub format: OutputFormat,
    color: bool,
    /// The terminal's width tables must fit; `None`: never truncate.
    width: Option<usize>,
}

impl std::fmt::Debug for Out<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("format", &self.format)
            .field("color", &self.color)
            .field("width", &self.width)
            .finish_non_exhaustive()
    }
}

/// Table columns whose cells are free text, truncated (with an ellipsis)
/// to fit the terminal; every other column (ids, keys, numbers, times,
/// statuses) is always shown whole.
const FREE_TEXT_COLUMNS: &[&str] = &[
    "DISPLAY NAME",
    "MESSAGE",
    "NOTE",
    "OPERATION",
    "WHO",
    "ENVIRONMENTS",
];

/// A truncated column keeps at least this many columns of text (or its
/// header's width, if wider).
const MIN_TRUNCATED_WIDTH: usize = 8;

/// The columns between two table cells.
const GAP: usize = 2;

/// The width of `s` on a terminal (CJK and emoji are two columns,
/// combining marks none).
pub(crate) fn display_width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to at most `width` display columns, the last of them an
/// ellipsis when anything was cut.
pub(crate) fn truncate(s: &str, width: usize) -> String {
    if display_width(s) <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// The widths of a table's columns after fitting it into `total` columns:
/// free-text columns shrink, the last column first, then the widest, each
/// down to [`MIN_TRUNCATED_WIDTH`] (or its header); a table that still does
/// not fit is left wider than the terminal rather than cut in an id.
fn fit(headers: &[&str], widths: &[usize], total: usize) -> Vec<usize> {
    let mut widths = widths.to_vec();
    let needed = |w: &[usize]| w.iter().sum::<usize>() + GAP * w.len().saturating_sub(1);
    let floor = |i: usize| display_width(headers[i]).max(MIN_TRUNCATED_WIDTH);
    let last = headers.len().saturating_sub(1);
    let mut order: Vec<usize> = (0..headers.len())
        .filter(|&i| FREE_TEXT_COLUMNS.contains(&headers[i]))
        .collect();
    // The last column first, then the widest.
    order.sort_by_key(|&i| (i != last, std::cmp::Reverse(widths[i])));
    for i in order {
        let over = needed(&widths).saturating_sub(total);
        if over == 0 {
            break;
        }
        let lowest = floor(i).min(widths[i]);
        widths[i] = widths[i].saturating_sub(over).max(lowest);
    }
    widths
}

/// ANSI styles, used only when colour is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Bold (headers).
    Bold,
    /// Green (good).
    Green,
    /// Yellow (attention).
    Yellow,
    /// Red (bad).
    Red,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Bold => "1",
            Style::Green => "32",
            Style::Yellow => "33",
            Style::Red => "31",
        }
    }
}

/// `text` in `style` when `color`, else as is. Each line is painted on
/// its own and reset before its newline, so a colour never runs into the
/// next line (or into the shell's prompt).
pub(crate) fn paint(color: bool, style: Style, text: &str) -> String {
    if !color {
        return text.to_string();
    }
    text.split('\n')
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("\x1b[{}m{line}\x1b[0m", style.code())
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The style of a status word.
pub(crate) fn status_style(status: TenantStatus) -> Style {
    match status {
        TenantStatus::Active => Style::Green,
        TenantStatus::Suspended => Style::Yellow,
        TenantStatus::Expired | TenantStatus::Deleted => Style::Red,
    }
}

/// One table cell: text and an optional style applied after padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cell {
    text: String,
    style: Option<Style>,
}

impl Cell {
    /// A styled cell.
    pub(crate) fn styled(text: impl Into<String>, style: Style) -> Self {
        Cell {
            text: text.into(),
            style: Some(style),
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, style: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell {
            text: text.to_string(),
            style: None,
        }
    }
}

/// Terminal-safe text: control characters shown escaped.
fn safe(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.chars().flat_map(char::escape_debug).collect()
    } else {
        s.to_string()
    }
}

impl<'a> Out<'a> {
    /// An output on `w` whose tables are never truncated.
    #[cfg(test)]
    pub(crate) fn new(w: &'a mut dyn Write, format: OutputFormat, color: bool) -> Self {
        Out {
            w,
            format,
            color,
            width: None,
        }
    }

    /// The output on `io`'s stdout: colour and table width as [`Io`] says.
    pub(crate) fn stdout(io: &'a mut Io, format: OutputFormat) -> Self {
        let color = io.stdout_color();
        let width = io.stdout_width();
        Out {
            w: &mut *io.stdout,
            format,
            color,
            width,
        }
    }

    /// The same output fitting its tables into `width` columns.
    #[cfg(test)]
    pub(crate) fn with_width(self, width: Option<usize>) -> Self {
        Out { width, ..self }
    }

    /// True for `--output json`.
    pub(crate) fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Prints a JSON document (pretty, one per command).
    pub(crate) fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> anyhow::Result<()> {
        serde_json::to_writer_pretty(&mut *self.w, value)?;
        writeln!(self.w)?;
        Ok(())
    }

    /// Prints a line of text.
    pub(crate) fn line(&mut self, text: &str) -> anyhow::Result<()> {
        writeln!(self.w, "{text}")?;
        Ok(())
    }

    /// Prints an aligned table; an empty table prints `empty` instead.
    /// Columns are aligned by display width; on a terminal, free-text
    /// columns ([`FREE_TEXT_COLUMNS`]) are cut with an ellipsis so rows fit
    /// its width (never into a pipe: scripts get whole values).
    pub(crate) fn table(
        &mut self,
        headers: &[&str],
        rows: Vec<Vec<Cell>>,
        empty: &str,
    ) -> anyhow::Result<()> {
        if rows.is_empty() {
            return self.line(empty);
        }
        let rows: Vec<Vec<Cell>> = rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|c| Cell {
                        text: safe(&c.text),
                        style: c.style,
                    })
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = headers.iter().map(|h| display_width(h)).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(display_width(&c.text));
                }
            }
        }
        if let Some(total) = self.width {
            widths = fit(headers, &widths, total);
        }
        let render = |cells: Vec<(String, Option<Style>)>, color: bool| -> String {
            let last = cells.len().saturating_sub(1);
            let mut line = String::new();
            for (i, (text, style)) in cells.into_iter().enumerate() {
                let text = match widths.get(i) {
                    Some(&w) => truncate(&text, w),
                    None => text,
                };
                let pad = match widths.get(i) {
                    Some(&w) if i != last => w.saturating_sub(display_width(&text)) + GAP,
                    _ => 0,
                };
                match style {
                    Some(s) => line.push_str(&paint(color, s, &text)),
                    None => line.push_str(&text),
                }
                line.push_str(&" ".repeat(pad));
            }
            line
        };
        let header = render(
            headers
                .iter()
                .map(|h| (h.to_string(), Some(Style::Bold)))
                .collect(),
            self.color,
        );
        writeln!(self.w, "{}", header.trim_end())?;
        for r in rows {
            let line = render(
                r.into_iter().map(|c| (c.text, c.style)).collect(),
                self.color,
            );
            writeln!(self.w, "{}", line.trim_end())?;
        }
        Ok(())
    }

    /// Prints `key: value` pairs with aligned values.
    pub(crate) fn pairs(&mut self, pairs: Vec<(&str, Cell)>) -> anyhow::Result<()> {
        let width = pairs
            .iter()
            .map(|(k, _)| display_width(k))
            .max()
            .unwrap_or(0);
        for (k, v) in pairs {
            let text = safe(&v.text);
            let value = match v.style {
                Some(s) => paint(self.color, s, &text),
                None => text,
            };
            let pad = " ".repeat(width.saturating_sub(display_width(k)) + GAP);
            writeln!(self.w, "{k}{pad}{value}")?;
        }
        Ok(())
    }
}

/// `n` and `noun`, plural when `n` is not 1: "1 object", "0 objects".
pub(crate) fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// How long ago `t` was at `now`, for list tables: "just now", "5m ago",
/// "3h ago", "2d ago"; "in 4m" for a time to come.
pub(crate) fn ago(t: &DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - *t).num_seconds();
    let (n, future) = (secs.unsigned_abs(), secs < 0);
    let span = match n {
        0..=9 => return "just now".into(),
        10..=59 => format!("{n}s"),
        60..=3599 => format!("{}m", n / 60),
        3600..=86_399 => format!("{}h", n / 3600),
        _ => format!("{}d", n / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A time for tables: `2024-05-01 12:00:00Z`.
pub(crate) fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// An optional time for tables.
pub(crate) fn opt_time(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(time).unwrap_or_else(|| "-".into())
}

/// A tenant as `--output json` shows it: the server's [`TenantView`] (the
/// same shape as `GET /v1/tenants/{id}`; never the credential hash).
pub(crate) fn tenant_json(t: &Tenant, now: DateTime<Utc>) -> Value {
    serde_json::to_value(TenantView::new(t, now)).unwrap_or(Value::Null)
}

/// A tenant as `key: value` rows for tables.
pub(crate) fn tenant_pairs(t: &Tenant, now: DateTime<Utc>) -> Vec<(&'static str, Cell)> {
    let status = t.effective_status(now);
    let l = t.limits();
    let mut rows: Vec<(&'static str, Cell)> = vec![
        ("id", t.id.to_string().into()),
        ("display name", t.display_name.clone().into()),
        ("email", t.email.clone().unwrap_or_else(|| "-".into()).into()),
        ("status", Cell::styled(status.as_str(), status_style(status))),
        ("plan", t.plan.as_str().into()),
        (
            "limits",
            format!(
                "stacks {}, services {}, monthly cost {}, jobs {}, workers {}, jobs/hour {}, cpu {}, gpu {}, rps {}, state bytes {}, state objects {}, locks {}",
                l.max_stacks,
                l.max_services,
                l.monthly_cost_limit,
                l.max_concurrent_jobs,
                l.max_workers,
                l.max_jobs_per_hour,
                l.max_cpu_cores,
                l.max_gpus,
                l.requests_per_second,
                l.max_state_bytes,
                l.max_state_objects,
                l.max_locks
            )
            .into(),
        ),
        (
            "credential",
            format!(
                "{}_..., generation {}, {}, last {}",
                t.credential.prefix,
                t.credential.generation,
                match t.credential.rotations {
                    0 => "never rotated".to_string(),
                    1 => "rotated once".to_string(),
                    n => format!("rotated {n} times"),
                },
                opt_time(&t.credential.last_rotated)
            )
            .into(),
        ),
        ("state prefix", t.state_root().map(|k| k.to_string()).unwrap_or_default().into()),
        ("lock prefix", t.lock_prefix.clone().into()),
        ("created", time(&t.created_at).into()),
        ("updated", time(&t.updated_at).into()),
        ("expires", opt_time(&t.expires_at).into()),
    ];
    if let Some(r) = &t.suspended_reason {
        rows.push(("suspended because", r.clone().into()));
    }
    if t.deleted_at.is_some() {
        rows.push(("deleted", opt_time(&t.deleted_at).into()));
    }
    for (k, v) in &t.metadata {
        rows.push(("metadata", format!("{k}={v}").into()));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_and_plain_without_colour() {
        let mut buf = Vec::new();
        let mut out = Out::new(&mut buf, OutputFormat::Table, false);
        out.table(
            &["ID", "STATUS", "PLAN"],
            vec![
                vec![
                    "acme".into(),
                    Cell::styled("active", Style::Green),
                    "free".into(),
                ],
                vec![
                    "globex-corp".into(),
                    Cell::styled("suspended", Style::Yellow),
                    "pro".into(),
                ],
            ],
            "no tenants",
        )
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID           STATUS     PLAN");
        assert_eq!(lines[1], "acme         active     free");
        assert_eq!(lines[2], "globex-corp  suspended  pro");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn colour_keeps_alignment_and_control_chars_are_escaped() {
        let mut buf = Vec::new();
        let mut out = Out::new(&mut buf, OutputFormat::Table, true);
        out.table(
            &["A", "B"],
            vec![vec![Cell::styled("x", Style::Red), "evil\x1b[2J".into()]],
            "",
        )
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("\x1b[31mx\x1b[0m  "), "{text:?}");
        assert!(text.contains("evil\\u{1b}[2J"), "{text:?}");
    }

    #[test]
    fn colour_resets_before_every_newline() {
        assert_eq!(paint(true, Style::Red, "x"), "\x1b[31mx\x1b[0m");
        assert_eq!(
            paint(true, Style::Yellow, "a\nb\n"),
            "\x1b[33ma\x1b[0m\n\x1b[33mb\x1b[0m\n"
        );
        assert_eq!(paint(false, Style::Red, "a\n"), "a\n");
        let mut buf = Vec::new();
        let mut out = Out::new(&mut buf, OutputFormat::Table, true);
        out.table(
            &["ID", "STATUS"],
            vec![vec!["acme".into(), Cell::styled("active", Style::Green)]],
            "",
        )
        .unwrap();
        out.pairs(vec![("status", Cell::styled("suspended", Style::Yellow))])
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        for line in text.split_inclusive('\n') {
            let body = line.strip_suffix('\n').unwrap_or(line);
            let opens = body.matches("\x1b[3").count() + body.matches("\x1b[1m").count();
            assert_eq!(opens, body.matches("\x1b[0m").count(), "{line:?}");
            assert!(
                !body.contains('\x1b') || body.ends_with("\x1b[0m"),
                "a colour runs past its line: {line:?}"
            );
        }
    }

    #[test]
    fn wide_characters_are_aligned_by_display_width() {
        let mut buf = Vec::new();
        let mut out = Out::new(&mut buf, OutputFormat::Table, false);
        out.table(
            &["ID", "DISPLAY NAME", "PLAN"],
            vec![
                vec!["acme".into(), "株式会社アクメ".into(), "pro".into()],
                vec!["globex".into(), "Globex".into(), "free".into()],
                vec!["cafe".into(), "Cafe\u{301} 🚀".into(), "free".into()],
            ],
            "",
        )
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let plan_at: Vec<usize> = text
            .lines()
            .map(|l| {
                let i = l.rfind("  ").unwrap() + 2;
                display_width(&l[..i])
            })
            .collect();
        assert_eq!(plan_at, [24, 24, 24, 24], "{text}");
        assert!(text.contains("acme    株式会社アクメ  pro"), "{text}");
    }

    #[test]
    fn tables_fit_the_terminal_by_cutting_free_text_last_column_first() {
        let rows = || {
            vec![
                vec![
                    "a-very-long-tenant-id".into(),
                    "active".into(),
                    "A display name that goes on and on".into(),
                    "2024-05-01 12:00:00Z".into(),
                ],
                vec![
                    "acme".into(),
                    "active".into(),
                    "Acme".into(),
                    "2024-05-01 12:00:00Z".into(),
                ],
            ]
        };
        let headers = ["ID", "STATUS", "DISPLAY NAME", "CREATED"];
        let render = |width: Option<usize>| {
            let mut buf = Vec::new();
            Out::new(&mut buf, OutputFormat::Table, false)
                .with_width(width)
                .table(&headers, rows(), "")
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        // Whole values without a width (a pipe), and when they fit.
        let whole = render(None);
        assert!(whole.contains("A display name that goes on and on"));
        assert_eq!(render(Some(200)), whole);
        // 70 columns: only the display name is cut, ids and times stay whole.
        let cut = render(Some(70));
        for line in cut.lines() {
            assert!(
                display_width(line) <= 70,
                "{line:?} ({})",
                display_width(line)
            );
        }
        assert!(cut.contains("a-very-long-tenant-id"), "{cut}");
        assert!(cut.contains("2024-05-01 12:00:00Z"), "{cut}");
        assert!(cut.contains("A display name t…"), "{cut}");
        assert!(!cut.contains("goes on and on"), "{cut}");
        // Too narrow for even the shortest free text: ids are never cut.
        let narrow = render(Some(20));
        assert!(narrow.contains("a-very-long-tenant-id"), "{narrow}");
        assert!(narrow.contains("A display n…"), "{narrow}");
    }

    #[test]
    fn truncation_counts_display_columns() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("株式会社", 5), "株式…");
        assert_eq!(display_width(&truncate("株式会社", 4)), 3);
        assert_eq!(truncate("abc", 0), "");
    }

    #[test]
    fn empty_tables_say_so() {
        let mut buf = Vec::new();
        let mut out = Out::new(&mut buf, OutputFormat::Table, false);
        out.table(&["A"], vec![], "nothing here").unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "nothing here\n");
    }
}

#[cfg(test)]
mod time_and_count_tests {
    use super::*;

    #[test]
    fn counts_and_ages_read_well() {
        assert_eq!(plural(0, "object"), "0 objects");
        assert_eq!(plural(1, "object"), "1 object");
        assert_eq!(plural(2, "object"), "2 objects");
        let now = Utc::now();
        let at = |s: i64| now - chrono::Duration::seconds(s);
        assert_eq!(ago(&at(3), now), "just now");
        assert_eq!(ago(&at(42), now), "42s ago");
        assert_eq!(ago(&at(300), now), "5m ago");
        assert_eq!(ago(&at(3 * 3600), now), "3h ago");
        assert_eq!(ago(&at(3 * 86_400 + 5), now), "3d ago");
        assert_eq!(ago(&at(-240), now), "in 4m");
    }
}
