//! Printing audit records: an aligned table for people, JSON lines for programs.

use std::io::{self, Write};

use flowlink_proto::audit::ToolCallRecord;
use time::OffsetDateTime;
use time::macros::format_description;

/// Longest arguments preview, in characters.
const ARGS_PREVIEW: usize = 60;
/// Longest agent / service / tool / rule cell, in characters.
const NAME_CELL: usize = 32;

/// Prints `rows` as a table: time (UTC), agent, service, tool, verdict, rule, outcome, duration in
/// milliseconds and an arguments preview. Control characters from the agent or the server are shown
/// as `?`, so a record cannot drive the terminal.
pub fn render_table(rows: &[ToolCallRecord], out: &mut dyn Write) -> io::Result<()> {
    const HEADER: [&str; 9] = [
        "TIME", "AGENT", "SERVICE", "TOOL", "VERDICT", "RULE", "OUTCOME", "MS", "ARGS",
    ];
    let cells: Vec<[String; 9]> = rows.iter().map(row_cells).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    write_line(out, &HEADER.map(str::to_owned), &widths)?;
    for row in &cells {
        write_line(out, row, &widths)?;
    }
    Ok(())
}

/// Prints each record as one JSON object (its serde form) per line.
pub fn render_json_lines(rows: &[ToolCallRecord], out: &mut dyn Write) -> io::Result<()> {
    for row in rows {
        serde_json::to_writer(&mut *out, row)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn write_line(out: &mut dyn Write, cells: &[String; 9], widths: &[usize; 9]) -> io::Result<()> {
    let last = cells.len() - 1;
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i == last {
            // No padding after the last column.
            writeln!(out, "{cell}")?;
        } else if i == 7 {
            // Durations right-aligned.
            write!(out, "{cell:>width$}  ")?;
        } else {
            write!(out, "{cell:<width$}  ")?;
        }
    }
    Ok(())
}

fn row_cells(r: &ToolCallRecord) -> [String; 9] {
    let args = serde_json::to_string(&r.arguments).unwrap_or_else(|_| "?".to_owned());
    [
        format_time(r.received_at_us),
        cell(&r.agent, NAME_CELL),
        cell(&r.service, NAME_CELL),
        cell(&r.tool, NAME_CELL),
        r.verdict.as_str().to_owned(),
        r.rule_id
            .as_deref()
            .map_or_else(|| "-".to_owned(), |id| cell(id, NAME_CELL)),
        r.outcome.as_str().to_owned(),
        r.duration_us.map_or_else(|| "-".to_owned(), format_ms),
        cell(&args, ARGS_PREVIEW),
    ]
}

/// `2026-11-25T10:00:00Z` (UTC, to the second).
fn format_time(us: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(us.div_euclid(1_000_000))
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| format!("@{us}us"))
}

/// Microseconds as milliseconds with one decimal: `1234567` -> `1234.5`.
fn format_ms(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let us = us.unsigned_abs();
    format!("{sign}{}.{}", us / 1000, (us % 1000) / 100)
}

/// Replaces control characters with `?` and shortens to `max` characters (ending in `…`).
fn cell(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    for (i, c) in s.chars().enumerate() {
        if i + 1 == max && s.chars().nth(max).is_some() {
            out.push('…');
            break;
        }
        out.push(if c.is_control() || is_bidi_control(c) {
            '?'
        } else {
            c
        });
    }
    out
}

/// Unicode bidirectional overrides and isolates, which can make a terminal line read differently
/// from what it holds.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}
