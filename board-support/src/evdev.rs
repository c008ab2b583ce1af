//! Buttons that are keys of a Linux input device (e.g. `gpio-keys`).
//!
//! The device is found by name under `<root>/sys/class/input/event*/device/name`
//! and read as a raw `struct input_event` stream, decoded here so that any
//! byte stream (a file or pipe in tests) is checked: a truncated or garbage
//! record is an error, never a panic. Edges then go through the software
//! debouncer.

use crate::button_task::{self, RawEdge};
use crate::{BoardError, Button, ButtonEvent, Mono};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;

const EV_SYN: u16 = 0x00;
const EV_KEY: u16 = 0x01;
const EV_MAX: u16 = 0x1f;
const SYN_DROPPED: u16 = 3;

/// The code of a key name such as `KEY_RESTART` or `BTN_0`.
pub fn key_code(name: &str) -> Result<u16, String> {
    if !(name.starts_with("KEY_") || name.starts_with("BTN_")) {
        return Err(format!(
            "key {name:?} must be a KEY_* or BTN_* name from linux/input-event-codes.h"
        ));
    }
    evdev::KeyCode::from_str(name)
        .map(|k| k.code())
        .map_err(|_| format!("unknown key name {name:?} (see linux/input-event-codes.h)"))
}

/// Size of `struct input_event` for a given `long` width: two longs of
/// `timeval` (seconds, microseconds), then u16 type, u16 code, i32 value.
pub const fn record_size(long_bytes: usize) -> usize {
    2 * long_bytes + 8
}

/// This machine's `long` width (4 on 32-bit ARM such as the ODROID-HC2).
pub const NATIVE_LONG: usize = std::mem::size_of::<libc::c_long>();

/// One decoded `struct input_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub time: Mono,
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

/// Decodes one record of `record_size(long_bytes)` bytes (native endianness).
/// `offset` is only for the error message.
pub fn decode_record(rec: &[u8], long_bytes: usize, offset: u64) -> Result<InputEvent, String> {
    if rec.len() != record_size(long_bytes) || !(long_bytes == 4 || long_bytes == 8) {
        return Err(format!(
            "input_event at byte {offset}: {} bytes, expected {}",
            rec.len(),
            record_size(long_bytes)
        ));
    }
    let long = |i: usize| -> i64 {
        let b = &rec[i * long_bytes..(i + 1) * long_bytes];
        if long_bytes == 8 {
            i64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        } else {
            i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).into()
        }
    };
    let (sec, usec) = (long(0), long(1));
    let t = 2 * long_bytes;
    let kind = u16::from_ne_bytes([rec[t], rec[t + 1]]);
    let code = u16::from_ne_bytes([rec[t + 2], rec[t + 3]]);
    let value = i32::from_ne_bytes([rec[t + 4], rec[t + 5], rec[t + 6], rec[t + 7]]);
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return Err(format!("input_event at byte {offset}: bad timestamp {sec} s {usec} us (not an input event stream?)"));
    }
    if kind > EV_MAX {
        return Err(format!("input_event at byte {offset}: unknown event type {kind:#x} (not an input event stream?)"));
    }
    if kind == EV_KEY && !(0..=2).contains(&value) {
        return Err(format!(
            "input_event at byte {offset}: key value {value} is not 0, 1 or 2"
        ));
    }
    Ok(InputEvent {
        time: Mono((sec as u64) * 1_000_000_000 + (usec as u64) * 1_000),
        kind,
        code,
        value,
    })
}

/// Reads records from `r` and yields the presses (`true`) and releases of
/// key `code`; autorepeat and other keys are skipped. Ends at EOF on a
/// record boundary; a partial record is an error.
pub struct KeyEdges<R> {
    reader: R,
    code: u16,
    long_bytes: usize,
    offset: u64,
    failed: bool,
}

impl<R: Read> KeyEdges<R> {
    pub fn new(reader: R, code: u16, long_bytes: usize) -> KeyEdges<R> {
        KeyEdges {
            reader,
            code,
            long_bytes,
            offset: 0,
            failed: false,
        }
    }

    fn read_record(&mut self, buf: &mut [u8]) -> Result<bool, String> {
        let mut got = 0;
        while got < buf.len() {
            match self.reader.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(format!(
                        "truncated input_event at byte {}: {got} of {} bytes before end of stream",
                        self.offset,
                        buf.len()
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading input_event at byte {}: {e}", self.offset)),
            }
        }
        Ok(true)
    }
}

impl<R: Read> Iterator for KeyEdges<R> {
    type Item = Result<(bool, Mono), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut buf = vec![0u8; record_size(self.long_bytes)];
        loop {
            let res = match self.read_record(&mut buf) {
                Ok(false) => return None,
                Ok(true) => decode_record(&buf, self.long_bytes, self.offset),
                Err(e) => Err(e),
            };
            self.offset += buf.len() as u64;
            match res {
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                Ok(ev) if ev.kind == EV_KEY && ev.code == self.code && ev.value != 2 => {
                    return Some(Ok((ev.value == 1, ev.time)));
                }
                Ok(ev) if ev.kind == EV_SYN && ev.code == SYN_DROPPED => {
                    // The kernel's buffer overflowed; the next key event resynchronises
                    // the level, and the debouncer ignores repeated levels.
                    tracing::warn!("input device dropped events (SYN_DROPPED)");
                }
                Ok(_) => {}
            }
        }
    }
}

/// Finds the event device whose `device/name` is `name`: `<root>/dev/input/eventN`.
pub fn find_device(root: &Path, name: &str, profile: &str) -> Result<PathBuf, BoardError> {
    let class = root.join("sys/class/input");
    let entries = std::fs::read_dir(&class).map_err(|e| {
        BoardError::io(
            format!(
                "board profile {profile}: input device {name:?}: listing {}",
                class.display()
            ),
            e,
        )
    })?;
    let mut seen = Vec::new();
    let mut found: Vec<String> = Vec::new();
    for entry in entries.flatten() {
        let ev = entry.file_name().to_string_lossy().into_owned();
        if !ev.starts_with("event") {
            continue;
        }
        let Ok(dev_name) = std::fs::read_to_string(entry.path().join("device/name")) else {
            continue;
        };
        let dev_name = dev_name.trim_end_matches('\n').to_string();
        if dev_name == name {
            found.push(ev);
        } else {
            seen.push(format!("{ev}: {dev_name:?}"));
        }
    }
    // Lowest number first, so the choice is stable if a name appears twice.
    found.sort_by_key(|e| {
        e.trim_start_matches("event")
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    match found.first() {
        Some(ev) => Ok(root.join("dev/input").join(ev)),
        None => {
            seen.sort();
            Err(BoardError::Other(format!(
                "board profile {profile}: no input device named {name:?} under {} (present: {})",
                class.display(),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            )))
        }
    }
}

/// Asks an evdev character device for CLOCK_MONOTONIC timestamps (the
/// default is CLOCK_REALTIME). Fails harmlessly on anything else.
fn use_monotonic_clock(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // EVIOCSCLOCKID = _IOW('E', 0xa0, int)
    const EVIOCSCLOCKID: libc::c_ulong = (1 << 30)
        | ((std::mem::size_of::<libc::c_int>() as libc::c_ulong) << 16)
        | ((b'E' as libc::c_ulong) << 8)
        | 0xa0;
    let clk: libc::c_int = libc::CLOCK_MONOTONIC;
    // SAFETY: valid fd, pointer to a live c_int as the ioctl expects.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), EVIOCSCLOCKID as _, &clk) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens the key `code` on the input device named `device_name` and starts
/// reading it: a reader thread feeds a debouncing task that sends into
/// `events`. Must be called inside a tokio runtime.
pub fn spawn_button(
    root: &Path,
    device_name: &str,
    code: u16,
    button: Button,
    debounce: Duration,
    profile: &str,
    events: mpsc::Sender<ButtonEvent>,
) -> Result<(), BoardError> {
    let path = find_device(root, device_name, profile)?;
    let file = std::fs::File::open(&path).map_err(|e| {
        BoardError::io(
            format!(
                "board profile {profile}: button {button}: opening input device {}",
                path.display()
            ),
            e,
        )
    })?;
    if let Err(e) = use_monotonic_clock(&file) {
        tracing::debug!(device = %path.display(), error = %e, "cannot switch input device to CLOCK_MONOTONIC");
    }
    spawn_reader(
        file,
        path.display().to_string(),
        code,
        button,
        debounce,
        events,
    )
}

/// The reader/debouncer pair on any byte stream (used by tests with files).
pub(crate) fn spawn_reader<R: Read + Send + 'static>(
    reader: R,
    what: String,
    code: u16,
    button: Button,
    debounce: Duration,
    events: mpsc::Sender<ButtonEvent>,
) -> Result<(), BoardError> {
    let (raw_tx, raw_rx) = mpsc::channel(64);
    button_task::spawn(button, debounce, false, raw_rx, events, None);
    std::thread::Builder::new()
        .name(format!("evdev {button}"))
        .spawn(move || {
            for item in KeyEdges::new(reader, code, NATIVE_LONG) {
                match item {
                    Ok((pressed, at)) => {
                        if raw_tx.blocking_send(RawEdge { pressed, at }).is_err() {
                            return; // board dropped
                        }
                    }
                    Err(e) => {
                        tracing::error!(device = %what, %button, error = %e, "button input stops");
                        return;
                    }
                }
            }
            tracing::warn!(device = %what, %button, "input device closed; button input stops");
        })
        .map_err(|e| {
            BoardError::io(
                format!("button {button}: starting the input reader thread"),
                e,
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(long_bytes: usize, sec: i64, usec: i64, kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [sec, usec] {
            if long_bytes == 8 {
                v.extend_from_slice(&x.to_ne_bytes());
            } else {
                v.extend_from_slice(&(x as i32).to_ne_bytes());
            }
        }
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend_from_slice(&value.to_ne_bytes());
        v
    }

    #[test]
    fn key_names_map_to_codes() {
        assert_eq!(key_code("KEY_POWER"), Ok(116));
        assert_eq!(key_code("KEY_RESTART"), Ok(0x198));
        assert!(key_code("KEY_NOPE").unwrap_err().contains("KEY_NOPE"));
        assert!(key_code("power").unwrap_err().contains("KEY_"));
    }

    #[test]
    fn decodes_key_edges_for_both_long_widths() {
        for lb in [4usize, 8] {
            let mut s = Vec::new();
            s.extend(rec(lb, 10, 500, EV_KEY, 116, 1));
            s.extend(rec(lb, 10, 500, EV_SYN, 0, 0));
            s.extend(rec(lb, 10, 600, EV_KEY, 30, 1)); // another key
            s.extend(rec(lb, 11, 0, EV_KEY, 116, 2)); // autorepeat
            s.extend(rec(lb, 12, 1, EV_KEY, 116, 0));
            let got: Vec<_> = KeyEdges::new(&s[..], 116, lb).collect();
            assert_eq!(
                got,
                vec![
                    Ok((true, Mono(10_000_500_000))),
                    Ok((false, Mono(12_000_001_000)))
                ],
                "long = {lb}"
            );
        }
    }

    #[test]
    fn truncated_and_garbage_records_are_errors() {
        let lb = 8;
        let mut s = rec(lb, 1, 0, EV_KEY, 116, 1);
        s.extend_from_slice(&[1, 2, 3]);
        let got: Vec<_> = KeyEdges::new(&s[..], 116, lb).collect();
        assert_eq!(got.len(), 2);
        let e = got[1].clone().unwrap_err();
        assert!(
            e.contains("truncated") && e.contains("byte 24") && e.contains("3 of 24"),
            "{e}"
        );

        let garbage = b"this is certainly not an input_event stream!!!!!";
        let got: Vec<_> = KeyEdges::new(&garbage[..], 116, lb).collect();
        assert_eq!(got.len(), 1, "stops after the first error");
        assert!(got[0].is_err());

        let bad_value = rec(lb, 1, 0, EV_KEY, 116, 7);
        let e = KeyEdges::new(&bad_value[..], 116, lb)
            .next()
            .unwrap()
            .unwrap_err();
        assert!(e.contains("key value 7"), "{e}");
        let bad_time = rec(lb, 1, 2_000_000, EV_KEY, 116, 1);
        assert!(KeyEdges::new(&bad_time[..], 116, lb)
            .next()
            .unwrap()
            .is_err());
        assert!(KeyEdges::new(&[][..], 116, lb).next().is_none());
    }

    fn input_tree(devices: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("dev/input")).unwrap();
        for (ev, name) in devices {
            let d = root.path().join("sys/class/input").join(ev).join("device");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        std::fs::create_dir_all(root.path().join("sys/class/input/input0")).unwrap();
        root
    }

    #[test]
    fn finds_the_device_by_name() {
        let root = input_tree(&[
            ("event0", "Power Button"),
            ("event3", "gpio-keys"),
            ("event12", "gpio-keys"),
        ]);
        let p = find_device(root.path(), "gpio-keys", "qemu-virt").unwrap();
        assert_eq!(p, root.path().join("dev/input/event3"));
        let e = find_device(root.path(), "intrust-buttons", "odroid-hc2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("odroid-hc2")
                && e.contains("\"intrust-buttons\"")
                && e.contains("\"Power Button\""),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = find_device(empty.path(), "gpio-keys", "qemu-virt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sys/class/input"), "{e}");
    }

    #[tokio::test]
    async fn a_device_file_yields_debounced_events() {
        let root = input_tree(&[("event2", "gpio-keys")]);
        let lb = NATIVE_LONG;
        let mut s = Vec::new();
        s.extend(rec(lb, 5, 0, EV_KEY, 116, 1));
        s.extend(rec(lb, 5, 2_000, EV_KEY, 116, 0)); // 2 ms bounce: swallowed
        s.extend(rec(lb, 5, 3_000, EV_KEY, 116, 1));
        s.extend(rec(lb, 6, 0, EV_KEY, 116, 0));
        std::fs::write(root.path().join("dev/input/event2"), &s).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        spawn_button(
            root.path(),
            "gpio-keys",
            116,
            Button::Pair,
            Duration::from_millis(20),
            "qemu-virt",
            tx,
        )
        .unwrap();
        let mut got = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            got.push((ev.edge, ev.at));
        }
        use crate::Edge;
        assert_eq!(
            got,
            vec![
                (Edge::Press, Mono(5_003_000_000)),
                (Edge::Release, Mono(6_000_000_000))
            ]
        );
    }
}
