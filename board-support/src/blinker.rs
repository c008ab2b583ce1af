//! Software LED timer: a small thread per LED that walks a [`LedPattern`]'s
//! steps and calls a write function, for backends the kernel cannot blink.
//!
//! The thread stops as soon as its [`Blinker`] is dropped (pattern changed or
//! LED dropped): it waits on a channel whose sender the `Blinker` holds.

use crate::LedPattern;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running software pattern; dropping it stops the thread (and waits for it,
/// so the next pattern's first write cannot be overtaken by this one's last).
#[derive(Debug)]
pub(crate) struct Blinker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Blinker {
    /// Starts walking `pattern` (a blink or sequence; steps must have ms > 0).
    /// `write(on)` errors are logged once and end the thread: a device that
    /// failed will not come back by retrying every few ms.
    pub(crate) fn start<W>(
        pattern: &LedPattern,
        what: String,
        mut write: W,
    ) -> std::io::Result<Blinker>
    where
        W: FnMut(bool) -> Result<(), String> + Send + 'static,
    {
        let steps = pattern.steps();
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name(format!("led {what}")).spawn(move || {
            // Absolute deadlines, so the pattern does not drift with scheduling delays.
            let mut next = Instant::now();
            let mut lit: Option<bool> = None;
            loop {
                for s in &steps {
                    if lit != Some(s.on) {
                        if let Err(e) = write(s.on) {
                            tracing::warn!(led = %what, error = %e, "LED timer stops: cannot set the LED");
                            return;
                        }
                        lit = Some(s.on);
                    }
                    next += Duration::from_millis(s.ms.max(1).into());
                    let wait = next.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        // Sender dropped (or told to stop): the pattern changed.
                        _ => return,
                    }
                }
            }
        })?;
        Ok(Blinker {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Blinker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn walks_the_steps_and_stops_when_dropped() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let b = Blinker::start(
            &LedPattern::Blink {
                on_ms: 5,
                off_ms: 5,
            },
            "t".into(),
            move |on| {
                l.lock().unwrap().push(on);
                Ok(())
            },
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.lock().unwrap().len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(b);
        let seen = log.lock().unwrap().clone();
        assert!(seen.len() >= 4, "{seen:?}");
        assert_eq!(&seen[..4], &[true, false, true, false]);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            log.lock().unwrap().len(),
            seen.len(),
            "no writes after drop"
        );
    }

    #[test]
    fn a_write_error_ends_the_thread() {
        let calls = Arc::new(Mutex::new(0));
        let c = calls.clone();
        let b = Blinker::start(
            &LedPattern::Blink {
                on_ms: 1,
                off_ms: 1,
            },
            "t".into(),
            move |_| {
                *c.lock().unwrap() += 1;
                Err("gone".into())
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(*calls.lock().unwrap(), 1);
        drop(b);
    }
}
