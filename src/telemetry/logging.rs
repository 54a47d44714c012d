//! Log setup: human-readable lines by default, JSON for log pipelines.
//! `RUST_LOG` overrides the level: `info` by default, with Pingora's own
//! start-up chatter kept to warnings.
//!
//! The access log (target [`ACCESS_TARGET`]) has its own line format, so
//! that a field the request did not have is still there: `null` in JSON,
//! `-` in text. A log pipeline can then rely on every key of every line.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::client_errors::{ClientErrorCounters, ClientErrorLayer, Now};

/// The `tracing` target of the one-line-per-request access log.
pub const ACCESS_TARGET: &str = "jwtgate::access";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber; also routes Pingora's `log` records into
/// it. Safe to call more than once (later calls are no-ops). `now` is the
/// clock that spaces the summaries of clients' connection errors.
pub fn init(format: LogFormat, now: Now) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn"))
        // Pingora's debug line for a request it can't parse quotes the raw
        // head, `Authorization` included: never let `RUST_LOG` turn it on.
        .add_directive(
            "pingora_proxy=warn"
                .parse()
                .expect("a valid static directive"),
        );
    // Its own filter, not `RUST_LOG`'s: the errors are counted whatever
    // the log shows.
    let client_errors = ClientErrorLayer::new(ClientErrorCounters::global(), now)
        .with_filter(ClientErrorLayer::targets());
    // Colour codes only help a person at a terminal; in a file or a log
    // collector they are garbage bytes around every level.
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(client_errors);
    let _ = match format {
        LogFormat::Text => registry
            .with(
                lines
                    .map_event_format(|inner| AccessLines { format, inner })
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                lines
                    .json()
                    .flatten_event(true)
                    .map_event_format(|inner| AccessLines { format, inner })
                    .with_filter(filter),
            )
            .try_init(),
    };
}

/// Formats access-log events itself and hands every other event to the
/// standard formatter.
struct AccessLines<F> {
    format: LogFormat,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for AccessLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != ACCESS_TARGET {
            return self.inner.format_event(ctx, writer, event);
        }
        write_line(writer, event, self.format)
    }
}

fn timestamp() -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_micros(std::time::SystemTime::now())
}

/// One access-log line.
///
/// JSON: `{"timestamp":…,"level":…,"message":…,<fields>,"target":…}`, the
/// shape of the other JSON lines, with `null` for each declared field left
/// empty.
///
/// Text: `<timestamp>  INFO jwtgate::access: request name="value" n=1
/// absent=-`: strings quoted and escaped (a user agent has spaces, and may
/// have control characters), numbers bare, an empty field `-`.
fn write_line(mut writer: Writer<'_>, event: &Event<'_>, format: LogFormat) -> fmt::Result {
    let metadata = event.metadata();
    let (time, level, target) = (timestamp(), metadata.level(), metadata.target());
    match format {
        LogFormat::Text => write!(writer, "{time} {level:>5} {target}:")?,
        LogFormat::Json => write!(writer, "{{\"timestamp\":\"{time}\",\"level\":\"{level}\"")?,
    }
    Fields::write(&mut writer, event, format)?;
    match format {
        LogFormat::Text => writer.write_char('\n'),
        LogFormat::Json => {
            writer.write_str(",\"target\":")?;
            write_json_string(&mut writer, target)?;
            writer.write_str("}\n")
        }
    }
}

/// Writes an event's fields in the order they are declared, an empty one
/// included: a field given no value (`None`, `Empty`) is never visited, so
/// the gap is filled when the next visited field (or the end) shows it.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    format: LogFormat,
    /// The declared fields not yet written or passed, in order.
    declared: tracing::field::Iter,
    /// The index of the first of them.
    next: usize,
    result: fmt::Result,
}

impl<'a, 'w> Fields<'a, 'w> {
    fn write(writer: &'a mut Writer<'w>, event: &Event<'_>, format: LogFormat) -> fmt::Result {
        let mut fields = Fields {
            writer,
            format,
            declared: event.metadata().fields().iter(),
            next: 0,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        fields.absent_until(usize::MAX)
    }

    fn absent_until(&mut self, index: usize) -> fmt::Result {
        while self.next < index {
            let Some(field) = self.declared.next() else {
                break;
            };
            self.next += 1;
            match self.format {
                LogFormat::Json => {
                    self.writer.write_char(',')?;
                    write_json_string(self.writer, field.name())?;
                    self.writer.write_str(":null")?;
                }
                LogFormat::Text => write!(self.writer, " {}=-", field.name())?,
            }
        }
        Ok(())
    }

    fn field(&mut self, field: &Field, value: Value<'_>) {
        if self.result.is_err() {
            return;
        }
        self.result = self.write_field(field, value);
    }

    fn write_field(&mut self, field: &Field, value: Value<'_>) -> fmt::Result {
        self.absent_until(field.index())?;
        if self.next == field.index() {
            self.declared.next();
            self.next += 1;
        }
        let w = &mut *self.writer;
        match self.format {
            LogFormat::Json => {
                w.write_char(',')?;
                write_json_string(w, field.name())?;
                w.write_char(':')?;
                match value {
                    Value::Text(text) => write_json_string(w, text),
                    Value::Debug(value) => {
                        w.write_char('"')?;
                        write!(JsonEscaped(w), "{value:?}")?;
                        w.write_char('"')
                    }
                    // JSON has no NaN or infinity.
                    Value::Number(number) if !number.finite() => w.write_str("null"),
                    Value::Number(number) => write!(w, "{number}"),
                }
            }
            // The message stands on its own, as in the standard format.
            LogFormat::Text if field.name() == "message" => {
                w.write_char(' ')?;
                match value {
                    Value::Text(text) => TextEscaped(w).write_str(text),
                    Value::Debug(value) => write!(TextEscaped(w), "{value:?}"),
                    Value::Number(number) => write!(w, "{number}"),
                }
            }
            LogFormat::Text => {
                write!(w, " {}=", field.name())?;
                match value {
                    Value::Text(text) => {
                        w.write_char('"')?;
                        TextEscaped(w).write_str(text)?;
                        w.write_char('"')
                    }
                    Value::Debug(value) => {
                        w.write_char('"')?;
                        write!(TextEscaped(w), "{value:?}")?;
                        w.write_char('"')
                    }
                    Value::Number(number) => write!(w, "{number}"),
                }
            }
        }
    }
}

enum Value<'a> {
    Text(&'a str),
    Debug(&'a dyn fmt::Debug),
    Number(Number),
}

/// Numbers and booleans: written bare in both formats.
#[derive(Clone, Copy)]
enum Number {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl Number {
    fn finite(self) -> bool {
        match self {
            Number::F64(value) => value.is_finite(),
            _ => true,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::I64(value) => write!(f, "{value}"),
            Number::U64(value) => write!(f, "{value}"),
            Number::F64(value) => write!(f, "{value}"),
            Number::Bool(value) => write!(f, "{value}"),
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, Value::Debug(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, Value::Text(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, Value::Number(Number::I64(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, Value::Number(Number::U64(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, Value::Number(Number::Bool(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, Value::Number(Number::F64(value)));
    }
}

fn write_json_string(writer: &mut impl fmt::Write, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    JsonEscaped(writer).write_str(text)?;
    writer.write_char('"')
}

/// Writes through, escaped for the inside of a JSON string.
struct JsonEscaped<'a, W: ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in text.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if c.is_control() => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", c as u32)?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + c.len_utf8();
        }
        self.0.write_str(&text[plain..])
    }
}

/// Writes through with `"`, `\` and control characters escaped, so a value
/// can neither end its quotes early nor start a new line or a terminal
/// escape sequence.
pub(super) struct TextEscaped<'a, W: ?Sized>(pub(super) &'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for TextEscaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in text.char_indices() {
            if !(c == '"' || c == '\\' || c.is_control()) {
                continue;
            }
            self.0.write_str(&text[plain..i])?;
            write!(self.0, "{}", c.escape_default())?;
            plain = i + c.len_utf8();
        }
        self.0.write_str(&text[plain..])
    }
}

/// Displays at most `max` bytes of a string (cut at a character boundary),
/// then `…[N bytes]` with the full length: a client-chosen value can't
/// flood the log, and the reader still sees that it was cut.
#[derive(Clone, Copy)]
pub struct Truncated<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Truncated<'a> {
    pub fn new(text: &'a str, max: usize) -> Self {
        Self { text, max }
    }
}

impl fmt::Display for Truncated<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.len() <= self.max {
            return f.write_str(self.text);
        }
        let mut cut = self.max;
        while !self.text.is_char_boundary(cut) {
            cut -= 1;
        }
        write!(f, "{}…[{} bytes]", &self.text[..cut], self.text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_keeps_short_text_and_cuts_long_text_at_a_character() {
        assert_eq!(Truncated::new("/short", 8).to_string(), "/short");
        assert_eq!(Truncated::new("/abcdefgh", 4).to_string(), "/abc…[9 bytes]");
        // "é" is two bytes: a cut inside it moves back to its start.
        assert_eq!(Truncated::new("/aé", 3).to_string(), "/a…[4 bytes]");
    }

    #[test]
    fn escapes_leave_no_control_character() {
        let mut json = String::new();
        write_json_string(&mut json, "a\"b\\c\n\t\u{1b}[31m").unwrap();
        assert_eq!(json, r#""a\"b\\c\n\t\u001b[31m""#);
        let mut text = String::new();
        TextEscaped(&mut text).write_str("a\"b\t\u{1b}").unwrap();
        assert_eq!(text, r#"a\"b\t\u{1b}"#);
    }
}
