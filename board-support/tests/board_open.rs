//! `Board::open` on a temp tree shaped like the kernel's `/sys` and `/dev`:
//! sysfs LEDs and evdev buttons, plus the error paths for missing hardware.

use intrust_board::{Board, BoardOptions, Button, Edge, LedPattern, LedRole, Profile};
use std::path::Path;
use std::time::Duration;

const PROFILE: &str = r#"
[board]
name = "tree"
sources = ["test"]
[[led]]
role = "status"
backend = "sysfs"
name = "blue:heartbeat"
[[button]]
role = "pair"
backend = "evdev"
device_name = "gpio-keys"
key = "KEY_POWER"
debounce_ms = 5
[[button]]
role = "reset"
backend = "evdev"
device_name = "gpio-keys"
key = "KEY_RESTART"
debounce_ms = 5
"#;

fn key_record(sec: i64, code: u16, value: i32) -> Vec<u8> {
    let mut v = Vec::new();
    let long = std::mem::size_of::<libc::c_long>();
    for x in [sec, 0] {
        // struct input_event starts with two `long`s (little-endian hosts).
        v.extend_from_slice(&x.to_le_bytes()[..long]);
    }
    v.extend_from_slice(&1u16.to_ne_bytes());
    v.extend_from_slice(&code.to_ne_bytes());
    v.extend_from_slice(&value.to_ne_bytes());
    v
}

fn tree(root: &Path, events: &[u8]) {
    let led = root.join("sys/class/leds/blue:heartbeat");
    std::fs::create_dir_all(&led).unwrap();
    std::fs::write(led.join("brightness"), "0").unwrap();
    std::fs::write(led.join("max_brightness"), "255").unwrap();
    std::fs::write(led.join("trigger"), "[none] timer pattern heartbeat").unwrap();
    let dev = root.join("sys/class/input/event4/device");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("name"), "gpio-keys\n").unwrap();
    std::fs::create_dir_all(root.join("dev/input")).unwrap();
    std::fs::write(root.join("dev/input/event4"), events).unwrap();
}

#[tokio::test]
async fn sysfs_led_and_evdev_buttons_from_a_tree() {
    let mut events = Vec::new();
    events.extend(key_record(100, 116, 1)); // KEY_POWER press
    events.extend(key_record(101, 116, 0));
    events.extend(key_record(102, 0x198, 1)); // KEY_RESTART
    events.extend(key_record(103, 0x198, 0));
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), &events);
    let profile = Profile::parse(PROFILE, "tree.toml").unwrap();
    let mut board = Board::open(
        &profile,
        &BoardOptions {
            root: dir.path().into(),
            sim_socket: None,
        },
    )
    .unwrap();
    assert!(board.sim.is_none());

    board
        .led(LedRole::Status)
        .unwrap()
        .set(&LedPattern::Blink {
            on_ms: 200,
            off_ms: 800,
        })
        .unwrap();
    let led = dir.path().join("sys/class/leds/blue:heartbeat");
    assert_eq!(
        std::fs::read_to_string(led.join("trigger")).unwrap(),
        "timer"
    );
    assert_eq!(
        std::fs::read_to_string(led.join("delay_on")).unwrap(),
        "200"
    );

    // Each button has its own reader over the same stream, so order between
    // buttons is not defined; order per button is.
    let mut got = Vec::new();
    while got.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(5), board.events.recv())
            .await
            .unwrap()
            .unwrap();
        got.push((ev.button, ev.edge, ev.at.as_nanos() / 1_000_000_000));
    }
    let pair: Vec<_> = got
        .iter()
        .filter(|e| e.0 == Button::Pair)
        .map(|e| (e.1, e.2))
        .collect();
    let reset: Vec<_> = got
        .iter()
        .filter(|e| e.0 == Button::Reset)
        .map(|e| (e.1, e.2))
        .collect();
    assert_eq!(pair, vec![(Edge::Press, 100), (Edge::Release, 101)]);
    assert_eq!(reset, vec![(Edge::Press, 102), (Edge::Release, 103)]);
}

#[tokio::test]
async fn missing_hardware_errors_name_the_profile_and_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BoardOptions {
        root: dir.path().into(),
        sim_socket: None,
    };
    let profile = Profile::parse(PROFILE, "tree.toml").unwrap();
    let e = Board::open(&profile, &opts).unwrap_err().to_string();
    assert!(
        e.contains("tree (tree.toml)") && e.contains("blue:heartbeat"),
        "{e}"
    );

    let e = Board::open(&Profile::builtin("rpi4").unwrap(), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rpi4") && e.contains("\"ACT\""), "{e}");

    // LEDs present, input device missing.
    tree(dir.path(), &[]);
    std::fs::remove_dir_all(dir.path().join("sys/class/input/event4")).unwrap();
    let e = Board::open(&profile, &opts).unwrap_err().to_string();
    assert!(e.contains("no input device named \"gpio-keys\""), "{e}");

    // qemu-virt: evdev PAIR plus sim parts; without a socket path that is the error.
    let e = Board::open(&Profile::builtin("qemu-virt").unwrap(), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sim socket"), "{e}");
}

#[tokio::test]
async fn qemu_virt_mixes_evdev_and_sim() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path(), &key_record(7, 116, 1));
    let socket = dir.path().join("virt.sock");
    let opts = BoardOptions {
        root: dir.path().into(),
        sim_socket: Some(socket.clone()),
    };
    let mut board = Board::open(&Profile::builtin("qemu-virt").unwrap(), &opts).unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), board.events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ev.button, ev.edge), (Button::Pair, Edge::Press));
    let mut c = intrust_board::sim::SimClient::connect(&socket)
        .await
        .unwrap();
    match c.next().await.unwrap().unwrap() {
        intrust_board::sim::SimOut::Hello { buttons, .. } => {
            assert_eq!(buttons, vec![Button::Reset])
        }
        other => panic!("{other:?}"),
    }
}
