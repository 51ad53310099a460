//! Waiting for a log line of the library: the event a test needs, where
//! the broker can tell nothing (it is frozen, say).

use std::io::Write;
use std::sync::{Mutex, Once};

use tokio::sync::oneshot;

/// Who waits for which line: each entry fires once, on the first line that
/// holds all its needles.
type Watchers = Vec<(Vec<String>, oneshot::Sender<()>)>;

static WATCHERS: Mutex<Watchers> = Mutex::new(Vec::new());

/// Resolves once the library logs (at `warn` or above) a line holding every
/// one of `needles`. Tests run side by side in one process and share its
/// logs: give a needle only this test's line has (a server's instance id).
pub fn watch(needles: &[&str]) -> oneshot::Receiver<()> {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| LineWriter)
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("mcpmqtt=warn"))
            .try_init();
    });
    let (tx, rx) = oneshot::channel();
    let needles = needles.iter().map(|n| (*n).to_owned()).collect();
    WATCHERS.lock().expect("watchers lock").push((needles, tx));
    rx
}

/// Writes each event to stderr, and fires the watchers its line is for.
struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter writes each event whole.
        let line = String::from_utf8_lossy(buf);
        eprint!("{line}");
        let mut watchers = WATCHERS.lock().expect("watchers lock");
        let (hit, rest) = std::mem::take(&mut *watchers)
            .into_iter()
            .partition::<Watchers, _>(|(needles, _)| needles.iter().all(|n| line.contains(n.as_str())));
        *watchers = rest;
        for (_, tx) in hit {
            let _ = tx.send(());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
