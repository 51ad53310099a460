//! `call`: builds the arguments from `--arg` and `--json`, calls the tool,
//! shows its partials as they stream, and prints the result.

use std::io::{IsTerminal, Read as _, Write as _};
use std::time::{Duration, Instant};

use mcpmqtt::{CallOptions, Client, Partial};
use serde_json::{json, Map, Value};

use crate::cli::CallArgs;
use crate::exit::Failure;

/// Added to a tool's own timeout (from its card) for the caller's wait.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(5);
/// The wait when the card gives no timeout and none is asked for.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// The arguments object: `--json` (or `{}`), then each `--arg` on top.
///
/// `stdin` is read when `--json -` is given.
pub fn build_arguments(
    json: Option<&str>,
    pairs: &[String],
    stdin: impl FnOnce() -> std::io::Result<String>,
) -> Result<Value, Failure> {
    let mut object = match json {
        None => Map::new(),
        Some(text) => {
            let text = if text == "-" {
                stdin().map_err(|e| Failure::Usage(format!("could not read --json from stdin: {e}")))?
            } else {
                text.to_owned()
            };
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => map,
                Ok(other) => {
                    return Err(Failure::Usage(format!(
                        "--json must be a JSON object, not {}",
                        kind_of(&other)
                    )))
                }
                Err(e) => return Err(Failure::Usage(format!("--json is not valid JSON: {e}"))),
            }
        }
    };
    for pair in pairs {
        let (key, value) = parse_pair(pair)?;
        object.insert(key, value);
    }
    Ok(Value::Object(object))
}

/// `key=value`: the value as JSON if it parses, otherwise as a string.
fn parse_pair(pair: &str) -> Result<(String, Value), Failure> {
    let Some((key, raw)) = pair.split_once('=') else {
        return Err(Failure::Usage(format!(
            "--arg {pair:?} is not KEY=VALUE (e.g. --arg pages=3 or --arg url=https://example.com)"
        )));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(Failure::Usage(format!("--arg {pair:?} has an empty key")));
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    Ok((key.to_owned(), value))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Runs `call`: prints the result on stdout, partials on stderr.
pub async fn run(client: &Client, args: &CallArgs) -> Result<(), Failure> {
    let arguments = build_arguments(args.json.as_deref(), &args.args, || {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    })?;
    let timeout = match args.timeout {
        Some(secs) if secs.is_finite() && secs > 0.0 => Duration::from_secs_f64(secs),
        Some(secs) => return Err(Failure::Usage(format!("--timeout {secs} is not a positive number"))),
        None => tool_timeout(client, &args.tool).await,
    };
    let mut display = Display::new(&args.tool, std::io::stdout().is_terminal());
    let mut pending = client.call_streaming(&args.tool, arguments, CallOptions::new().timeout(timeout));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            partial = pending.next_partial() => match partial {
                Some(p) => display.partial(p),
                None => break,
            },
            _ = tick.tick(), if display.tty => display.redraw(),
        }
    }
    display.finish();
    let result = pending.result().await?;
    let mut out = std::io::stdout().lock();
    let text = serde_json::to_string_pretty(&result).map_err(anyhow::Error::from)?;
    writeln!(out, "{text}").map_err(anyhow::Error::from)?;
    Ok(())
}

/// How long to wait: the card's timeout plus a margin, else the default.
pub async fn tool_timeout(client: &Client, tool: &str) -> Duration {
    match client.tool_card(tool).await.ok().flatten().and_then(|c| c.timeout_ms) {
        Some(ms) => Duration::from_millis(ms) + TIMEOUT_MARGIN,
        None => DEFAULT_TIMEOUT,
    }
}

/// Shows partials: a live line on a terminal, JSON lines otherwise.
struct Display {
    tool: String,
    tty: bool,
    count: u64,
    last: String,
    started: Instant,
    drawn: bool,
}

impl Display {
    fn new(tool: &str, tty: bool) -> Self {
        Display {
            tool: tool.to_owned(),
            tty,
            count: 0,
            last: String::new(),
            started: Instant::now(),
            drawn: false,
        }
    }

    fn partial(&mut self, partial: Partial) {
        let n = self.count;
        self.count += 1;
        if self.tty {
            self.last = match &partial {
                Partial::Text(t) => t.clone(),
                Partial::Data(d) => d.to_string(),
                Partial::Progress(p) => p.to_string(),
                other => format!("{other:?}"),
            };
            self.redraw();
        } else {
            let line = match partial {
                Partial::Text(t) => json!({"partial": n, "content": t}),
                Partial::Data(d) => json!({"partial": n, "data": d}),
                Partial::Progress(p) => {
                    json!({"partial": n, "progress": p.progress, "total": p.total, "content": p.message})
                }
                other => json!({"partial": n, "content": format!("{other:?}")}),
            };
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
            let _ = err.flush();
        }
    }

    fn redraw(&mut self) {
        if !self.tty {
            return;
        }
        let elapsed = self.started.elapsed();
        let frame = SPINNER[(elapsed.as_millis() / 100) as usize % SPINNER.len()];
        let mut last: String = self.last.lines().next().unwrap_or_default().chars().take(80).collect();
        if !last.is_empty() {
            last.insert_str(0, ": ");
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{frame} {} {:.1}s, {} partial(s){last}",
            self.tool,
            elapsed.as_secs_f64(),
            self.count
        );
        let _ = err.flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(json: Option<&str>, pairs: &[&str]) -> Result<Value, Failure> {
        let pairs: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        build_arguments(json, &pairs, || Ok(r#"{"from": "stdin"}"#.into()))
    }

    #[test]
    fn values_are_json_when_they_parse() {
        let v = args(
            None,
            &[
                "n=3",
                "flag=true",
                "url=https://example.com/a=b",
                "quoted=\"3\"",
                "list=[1,2]",
                "empty=",
            ],
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"n": 3, "flag": true, "url": "https://example.com/a=b", "quoted": "3", "list": [1, 2], "empty": ""})
        );
    }

    #[test]
    fn arg_overrides_json() {
        let v = args(Some(r#"{"a": 1, "b": 2}"#), &["b=x"]).unwrap();
        assert_eq!(v, json!({"a": 1, "b": "x"}));
        assert_eq!(args(Some("-"), &[]).unwrap(), json!({"from": "stdin"}));
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for (json, pairs, needle) in [
            (None, vec!["novalue"], "is not KEY=VALUE"),
            (None, vec!["=3"], "empty key"),
            (Some("{not json"), vec![], "not valid JSON"),
            (Some("[1]"), vec![], "not an array"),
        ] {
            let err = args(json, &pairs).unwrap_err();
            assert!(matches!(err, Failure::Usage(_)), "{err:?}");
            assert!(err.to_string().contains(needle), "{err}");
            assert_eq!(err.code(), crate::exit::USAGE);
        }
    }
}
