//! The async shell around [`Debouncer`]: raw edges from a backend's reader
//! come in on a channel, debounced [`ButtonEvent`]s go out to the agent.
//!
//! One task per button. It ends when the raw channel closes (reader gone) or
//! the agent's receiver is dropped.

use crate::{Button, ButtonEvent, Debouncer, Mono};
use std::time::Duration;
use tokio::sync::mpsc;

/// A raw level change: `pressed` since `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawEdge {
    pub pressed: bool,
    pub at: Mono,
}

/// Called after an event was handed to the agent (the sim socket reports it).
pub(crate) type Handed = Box<dyn Fn(&ButtonEvent) + Send + Sync>;

/// Spawns the debouncing task on the current tokio runtime.
pub(crate) fn spawn(
    button: Button,
    period: Duration,
    initial_pressed: bool,
    mut raw: mpsc::Receiver<RawEdge>,
    out: mpsc::Sender<ButtonEvent>,
    handed: Option<Handed>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut deb = Debouncer::with_level(button, period, initial_pressed);
        let mut raw_open = true;
        loop {
            let deadline = deb.poll_timeout();
            if !raw_open && deadline.is_none() {
                return;
            }
            tokio::select! {
                edge = raw.recv(), if raw_open => match edge {
                    Some(e) => deb.handle_edge(e.pressed, e.at),
                    // Reader gone: still settle a pending level, then stop.
                    None => raw_open = false,
                },
                _ = sleep_until(deadline), if deadline.is_some() => deb.handle_timeout(Mono::now()),
            }
            while let Some(ev) = deb.poll_event() {
                if out.send(ev).await.is_err() {
                    return;
                }
                if let Some(h) = &handed {
                    h(&ev);
                }
            }
        }
    })
}

async fn sleep_until(deadline: Option<Mono>) {
    if let Some(d) = deadline {
        tokio::time::sleep(d.saturating_since(Mono::now())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Edge;

    #[tokio::test]
    async fn debounces_raw_edges_into_events() {
        let (raw_tx, raw_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let task = spawn(
            Button::Pair,
            Duration::from_millis(5),
            false,
            raw_rx,
            out_tx,
            None,
        );
        let t0 = Mono::now();
        raw_tx
            .send(RawEdge {
                pressed: true,
                at: t0,
            })
            .await
            .unwrap();
        raw_tx
            .send(RawEdge {
                pressed: false,
                at: t0 + Duration::from_millis(1),
            })
            .await
            .unwrap();
        raw_tx
            .send(RawEdge {
                pressed: true,
                at: t0 + Duration::from_millis(2),
            })
            .await
            .unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), out_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (ev.edge, ev.at),
            (Edge::Press, t0 + Duration::from_millis(2))
        );
        raw_tx
            .send(RawEdge {
                pressed: false,
                at: Mono::now(),
            })
            .await
            .unwrap();
        drop(raw_tx);
        // The pending release is still settled after the reader went away.
        let ev = tokio::time::timeout(Duration::from_secs(5), out_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.edge, Edge::Release);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
