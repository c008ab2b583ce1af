//! The simulated board socket end to end: real Unix sockets in a temp dir,
//! a real `Board` opened from the built-in `sim` profile.

use intrust_board::sim::{SimClient, SimIn, SimOut, MAX_LINE};
use intrust_board::{Board, BoardOptions, Button, Edge, LedPattern, LedRole, Profile};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

fn open_sim(dir: &tempfile::TempDir) -> (Board, PathBuf) {
    let socket = dir.path().join("board.sock");
    let opts = BoardOptions {
        root: dir.path().to_path_buf(),
        sim_socket: Some(socket.clone()),
    };
    let board = Board::open(&Profile::builtin("sim").unwrap(), &opts).unwrap();
    (board, socket)
}

async fn next(c: &mut SimClient) -> SimOut {
    timeout(T, c.next())
        .await
        .expect("message in time")
        .expect("read ok")
        .expect("not closed")
}

async fn hello(c: &mut SimClient) -> SimOut {
    let m = next(c).await;
    assert!(matches!(m, SimOut::Hello { .. }), "{m:?}");
    m
}

#[tokio::test]
async fn hello_carries_current_patterns_and_changes_reach_every_client() {
    let dir = tempfile::tempdir().unwrap();
    let (mut board, socket) = open_sim(&dir);
    assert_eq!(board.name, "sim");
    assert_eq!(board.led_roles(), vec![LedRole::Status, LedRole::Link]);
    board
        .led(LedRole::Status)
        .unwrap()
        .set(&LedPattern::blink_hz(2))
        .unwrap();

    let mut a = SimClient::connect(&socket).await.unwrap();
    let mut b = SimClient::connect(&socket).await.unwrap();
    for c in [&mut a, &mut b] {
        match hello(c).await {
            SimOut::Hello {
                protocol,
                board,
                buttons,
                leds,
                now_us,
            } => {
                assert_eq!((protocol, board.as_str()), (1, "sim"));
                assert_eq!(buttons, vec![Button::Pair, Button::Reset]);
                assert_eq!(leds[&LedRole::Status], LedPattern::blink_hz(2));
                assert_eq!(leds[&LedRole::Link], LedPattern::Off);
                assert!(now_us > 0);
            }
            _ => unreachable!(),
        }
    }
    let seq = LedPattern::sequence(&[(true, 100), (false, 900)]);
    board.led(LedRole::Link).unwrap().set(&seq).unwrap();
    for c in [&mut a, &mut b] {
        match next(c).await {
            SimOut::Led {
                led,
                pattern,
                at_us,
            } => {
                assert_eq!((led, &pattern), (LedRole::Link, &seq));
                assert!(at_us > 0);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(board.sim.as_ref().unwrap().path(), socket.as_path());
}

#[tokio::test]
async fn presses_are_debounced_handed_to_the_agent_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut board, socket) = open_sim(&dir);
    let mut watcher = SimClient::connect(&socket).await.unwrap();
    hello(&mut watcher).await;
    let mut c = SimClient::connect(&socket).await.unwrap();
    hello(&mut c).await;

    // A bounce far shorter than the 10 ms debounce: nothing.
    c.press(Button::Reset).await.unwrap();
    c.release(Button::Reset).await.unwrap();
    // A real press.
    c.press(Button::Pair).await.unwrap();
    let ev = timeout(T, board.events.recv()).await.unwrap().unwrap();
    assert_eq!((ev.button, ev.edge), (Button::Pair, Edge::Press));
    tokio::time::sleep(Duration::from_millis(15)).await;
    c.release(Button::Pair).await.unwrap();
    let ev2 = timeout(T, board.events.recv()).await.unwrap().unwrap();
    assert_eq!((ev2.button, ev2.edge), (Button::Pair, Edge::Release));
    assert!(ev2.at > ev.at);

    for cl in [&mut watcher, &mut c] {
        let mut got = Vec::new();
        while got.len() < 2 {
            match next(cl).await {
                SimOut::Button {
                    button,
                    edge,
                    at_us,
                } => {
                    assert!(at_us >= ev.at.as_micros());
                    got.push((button, edge));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            got,
            vec![(Button::Pair, Edge::Press), (Button::Pair, Edge::Release)]
        );
    }
    // The reset bounce never became an event.
    assert!(board.events.try_recv().is_err());
}

async fn expect_error_then_close(c: &mut SimClient, want: &str) {
    match next(c).await {
        SimOut::Error { message } => {
            assert!(message.contains(want), "want {want:?} in {message:?}")
        }
        other => panic!("{other:?}"),
    }
    let end = timeout(T, c.next()).await.expect("closed in time");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn a_bad_line_closes_only_that_client() {
    let dir = tempfile::tempdir().unwrap();
    let (mut board, socket) = open_sim(&dir);
    let mut good = SimClient::connect(&socket).await.unwrap();
    hello(&mut good).await;

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"{\"op\":\"push\",\"button\":\"pair\"}\n".to_vec(),
            "malformed line",
        ),
        (b"not json\n".to_vec(), "malformed line"),
        (
            b"{\"op\":\"press\",\"button\":\"pair\",\"x\":1}\n".to_vec(),
            "malformed line",
        ),
        (
            [vec![b' '; MAX_LINE + 10], b"\n".to_vec()].concat(),
            "longer than 4096",
        ),
    ];
    for (bytes, want) in cases {
        let mut bad = SimClient::connect(&socket).await.unwrap();
        hello(&mut bad).await;
        bad.send_raw(&bytes).await.unwrap();
        expect_error_then_close(&mut bad, want).await;
    }
    // A line of exactly MAX_LINE bytes is accepted.
    let mut ok = SimClient::connect(&socket).await.unwrap();
    hello(&mut ok).await;
    let op = serde_json::to_string(&SimIn::Press {
        button: Button::Pair,
    })
    .unwrap();
    let padded = format!("{op}{}\n", " ".repeat(MAX_LINE - op.len()));
    ok.send_raw(padded.as_bytes()).await.unwrap();
    let ev = timeout(T, board.events.recv()).await.unwrap().unwrap();
    assert_eq!(ev.edge, Edge::Press);

    // The first client saw none of that trouble and still gets updates.
    board
        .led(LedRole::Status)
        .unwrap()
        .set(&LedPattern::On)
        .unwrap();
    loop {
        match next(&mut good).await {
            SimOut::Led { pattern, .. } => {
                assert_eq!(pattern, LedPattern::On);
                break;
            }
            SimOut::Button { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_block_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut board, socket) = open_sim(&dir);
    let _stuck = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let mut live = SimClient::connect(&socket).await.unwrap();
    hello(&mut live).await;
    let started = std::time::Instant::now();
    let mut last = LedPattern::Off;
    for i in 0..2_000u32 {
        last = LedPattern::Blink {
            on_ms: 1 + i,
            off_ms: 100,
        };
        board.led(LedRole::Status).unwrap().set(&last).unwrap();
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "set() must not wait for clients"
    );
    // The live client either keeps up or is dropped; it is never wedged.
    loop {
        match timeout(T, live.next())
            .await
            .expect("live client progresses")
        {
            Ok(Some(SimOut::Led { pattern, .. })) if pattern == last => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break, // dropped for lagging: allowed
        }
    }
    // New clients are still served.
    let mut fresh = SimClient::connect(&socket).await.unwrap();
    match hello(&mut fresh).await {
        SimOut::Hello { leds, .. } => assert_eq!(leds[&LedRole::Status], last),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn socket_is_private_stale_ones_are_replaced_and_other_files_kept() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("board.sock");
    // A stale socket from a previous run.
    let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(stale);
    let opts = BoardOptions {
        root: dir.path().to_path_buf(),
        sim_socket: Some(socket.clone()),
    };
    let board = Board::open(&Profile::builtin("sim").unwrap(), &opts).unwrap();
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    drop(board);
    assert!(!socket.exists(), "socket removed when the board is dropped");

    std::fs::write(&socket, "precious").unwrap();
    let e = Board::open(&Profile::builtin("sim").unwrap(), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "precious");
}

#[tokio::test]
async fn sim_profile_without_a_socket_path_is_a_clear_error() {
    let e = Board::open(&Profile::builtin("sim").unwrap(), &BoardOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sim socket") && e.contains("sim (builtin:sim)"),
        "{e}"
    );
}
