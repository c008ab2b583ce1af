//! Crash states in the manner of CrashMonkey and ALICE: a [`Recorder`] holds
//! named devices (slot partitions, the env device, the data area) whose
//! [`RecordingStorage`] handles log every write and sync into one shared
//! log; from the log it produces the device contents a power cut could leave,
//! for tests to check with the boot model.
//!
//! The model of a disk under a write-back cache:
//! - a write is durable once a later sync of *the same device* has returned
//!   (an fsync makes that file's or device's earlier writes durable and
//!   orders nothing on any other device);
//! - a write not yet covered by such a sync is in flight: it may have
//!   reached the medium whole, not at all, or torn, as any subset of its
//!   512-byte sectors ([`SECTOR`]; one sector is written atomically), in
//!   any order; where two landed pieces overlap, the later write wins.
//!
//! Crash points are just before each sync and at the end of the log: a
//! crash anywhere between two syncs leaves a state that the next crash
//! point also produces (durable writes only change at a sync), so no other
//! point is needed. At each crash point the in-flight writes are split into
//! sector units and [`Recorder::crash_states`] picks subsets of them: all
//! subsets when there are few, else every prefix (writes landing in issue
//! order), each unit alone, all but one unit, and seeded random subsets.
//! [`Recorder::crash_states_torn_at`] models a weaker medium that tears
//! inside a sector. Invariant: the same log and seed always give the same
//! states.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;

use crate::storage::{MemStorage, OpenStorage, Storage};

/// The unit a torn write is made of: a disk writes a sector whole or not at
/// all.
pub const SECTOR: u64 = 512;

/// Up to this many in-flight units at a crash point, every subset is tried.
pub const EXHAUSTIVE_UNITS: usize = 8;

/// Random subsets tried per crash point beyond [`EXHAUSTIVE_UNITS`].
pub const RANDOM_SUBSETS: usize = 32;

/// One logged operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `data` written at `offset` of device number `device`.
    Write {
        /// Index of the device in the order it was added.
        device: usize,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A completed sync (fsync) of device number `device`.
    Sync {
        /// Index of the device in the order it was added.
        device: usize,
    },
}

#[derive(Debug, Default)]
struct Log {
    names: Vec<String>,
    initial: Vec<Vec<u8>>,
    live: Vec<Vec<u8>>,
    ops: Vec<Op>,
}

impl Log {
    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// Devices sharing one operation log. Cloning gives another handle on the
/// same log.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Rc<RefCell<Log>>);

/// A device of a [`Recorder`]: reads see every write so far (what the
/// running program sees through the page cache); writes and syncs are
/// logged. Like a block device it has a fixed size: writing past the end
/// is an error.
#[derive(Debug, Clone)]
pub struct RecordingStorage {
    log: Rc<RefCell<Log>>,
    device: usize,
    name: String,
}

/// Part of one in-flight write at a crash point: at most one sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// Index of the write in the log.
    pub op: usize,
    /// Its device.
    pub device: usize,
    /// Byte offset on the device.
    pub offset: u64,
    /// Range within the write's data.
    pub start: usize,
    /// End of that range.
    pub end: usize,
}

/// How a crash state's subset of in-flight units was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// One of all subsets (few units).
    Exhaustive,
    /// The first units in issue order landed.
    Prefix,
    /// Exactly one unit landed.
    Single,
    /// All units but one landed.
    AllButOne,
    /// A seeded random subset.
    Random,
}

/// One state a power cut could leave: the log up to `at` with its durable
/// writes, plus the `landed` units of the writes in flight there.
#[derive(Debug, Clone)]
pub struct CrashState {
    /// Number of logged operations issued before the cut.
    pub at: usize,
    /// The in-flight units at this crash point.
    pub units: Rc<[Unit]>,
    /// Which of `units` reached the medium.
    pub landed: Vec<bool>,
    /// How `landed` was chosen.
    pub choice: Choice,
}

impl CrashState {
    /// Whether any in-flight write touched `device` (landed or not).
    pub fn in_flight_on(&self, device: usize) -> bool {
        self.units.iter().any(|u| u.device == device)
    }

    /// Landed and total in-flight units, for messages.
    pub fn landed_count(&self) -> (usize, usize) {
        (
            self.landed.iter().filter(|l| **l).count(),
            self.landed.len(),
        )
    }
}

/// Device contents after a crash, by device name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    names: Vec<String>,
    images: Vec<Vec<u8>>,
}

impl Disk {
    /// The bytes of device `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(&self.images[i])
    }

    /// A [`MemStorage`] holding a copy of device `path`, for reading it back
    /// with the code that reads real devices (e.g. `UbootEnv::with_storage`).
    pub fn storage(&self, path: &Path) -> io::Result<MemStorage> {
        let name = path.to_string_lossy();
        let bytes = self.get(&name).ok_or_else(|| not_found(&name))?;
        Ok(MemStorage {
            bytes: bytes.to_vec(),
            syncs: 0,
        })
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Adds a device named `name` holding `bytes` (its size is fixed from
    /// now on). Returns its index; a name used twice is an error.
    pub fn add_device(&self, name: &str, bytes: Vec<u8>) -> io::Result<usize> {
        let mut log = self.0.borrow_mut();
        if log.index(name).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("device {name} added twice"),
            ));
        }
        log.names.push(name.to_owned());
        log.initial.push(bytes.clone());
        log.live.push(bytes);
        Ok(log.names.len() - 1)
    }

    /// The index of device `name`.
    pub fn device(&self, name: &str) -> Option<usize> {
        self.0.borrow().index(name)
    }

    /// A handle on device `name`; a device never added is `NotFound`, as a
    /// missing device node would be.
    pub fn open(&self, name: &str) -> io::Result<RecordingStorage> {
        let device = self.device(name).ok_or_else(|| not_found(name))?;
        Ok(RecordingStorage {
            log: Rc::clone(&self.0),
            device,
            name: name.to_owned(),
        })
    }

    /// The current bytes of device `name`, all writes applied.
    pub fn live(&self, name: &str) -> Option<Vec<u8>> {
        let log = self.0.borrow();
        log.index(name).map(|i| log.live[i].clone())
    }

    /// Number of operations logged so far (to mark where a phase starts).
    pub fn len(&self) -> usize {
        self.0.borrow().ops.len()
    }

    /// Whether nothing was logged yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the log.
    pub fn ops(&self) -> Vec<Op> {
        self.0.borrow().ops.clone()
    }

    /// The crash states for crash points in `ops` (syncs whose index is in
    /// the range, and the range's end), with random subsets drawn from
    /// `seed`. See the module docs for the model.
    pub fn crash_states(&self, ops: Range<usize>, seed: u64) -> Vec<CrashState> {
        self.crash_states_torn_at(ops, seed, SECTOR)
    }

    /// [`Recorder::crash_states`] on a weaker medium that writes only
    /// `unit` bytes atomically (e.g. 16 for a card that tears inside a
    /// sector); `unit` 0 counts as 1.
    pub fn crash_states_torn_at(&self, ops: Range<usize>, seed: u64, unit: u64) -> Vec<CrashState> {
        let unit = unit.max(1);
        let log = self.0.borrow();
        let end = ops.end.min(log.ops.len());
        let mut points: Vec<usize> = (ops.start..end)
            .filter(|&i| matches!(log.ops[i], Op::Sync { .. }))
            .collect();
        points.push(end);
        points.dedup();
        let mut rng = SplitMix64(seed);
        let mut states = Vec::new();
        for at in points {
            let units: Rc<[Unit]> = in_flight_units(&log.ops[..at], unit).into();
            for (landed, choice) in subsets(units.len(), &mut rng) {
                states.push(CrashState {
                    at,
                    units: Rc::clone(&units),
                    landed,
                    choice,
                });
            }
        }
        states
    }

    /// The device contents `state` describes.
    pub fn disk(&self, state: &CrashState) -> Disk {
        let log = self.0.borrow();
        let ops = &log.ops[..state.at.min(log.ops.len())];
        let mut images = log.initial.clone();
        let durable = durable_writes(ops);
        for (i, op) in ops.iter().enumerate() {
            if let Op::Write {
                device,
                offset,
                data,
            } = op
            {
                if durable[i] {
                    apply(&mut images[*device], *offset, data);
                }
            }
        }
        for (unit, landed) in state.units.iter().zip(&state.landed) {
            if !landed {
                continue;
            }
            if let Some(Op::Write { data, .. }) = ops.get(unit.op) {
                apply(
                    &mut images[unit.device],
                    unit.offset,
                    &data[unit.start..unit.end],
                );
            }
        }
        Disk {
            names: log.names.clone(),
            images,
        }
    }
}

impl OpenStorage for Recorder {
    fn open(&mut self, path: &Path) -> io::Result<Box<dyn Storage>> {
        Ok(Box::new(Recorder::open(self, &path.to_string_lossy())?))
    }
}

impl Storage for RecordingStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&mut self) -> io::Result<u64> {
        Ok(self.log.borrow().live[self.device].len() as u64)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let log = self.log.borrow();
        let src = range(&log.live[self.device], offset, buf.len())
            .and_then(|r| log.live[self.device].get(r))
            .ok_or_else(|| past_end(&self.name))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut log = self.log.borrow_mut();
        let image = &mut log.live[self.device];
        let r = range(image, offset, data.len()).ok_or_else(|| past_end(&self.name))?;
        image[r].copy_from_slice(data);
        log.ops.push(Op::Write {
            device: self.device,
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.log.borrow_mut().ops.push(Op::Sync {
            device: self.device,
        });
        Ok(())
    }
}

/// `offset .. offset + len` if it lies within `image`.
fn range(image: &[u8], offset: u64, len: usize) -> Option<Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    (end <= image.len()).then_some(start..end)
}

/// Writes `data` at `offset`; the recorder refused writes past the end, so
/// everything logged fits.
fn apply(image: &mut [u8], offset: u64, data: &[u8]) {
    if let Some(r) = range(image, offset, data.len()) {
        image[r].copy_from_slice(data);
    }
}

/// For each op, whether it is a write followed by a sync of its device.
fn durable_writes(ops: &[Op]) -> Vec<bool> {
    let mut synced_after = HashSet::new();
    let mut durable = vec![false; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        match op {
            Op::Sync { device } => {
                synced_after.insert(*device);
            }
            Op::Write { device, .. } => durable[i] = synced_after.contains(device),
        }
    }
    durable
}

/// The writes in `ops` not yet made durable, cut at multiples of `unit`
/// (a sector), in issue order.
fn in_flight_units(ops: &[Op], unit: u64) -> Vec<Unit> {
    let durable = durable_writes(ops);
    let mut units = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let Op::Write {
            device,
            offset,
            data,
        } = op
        else {
            continue;
        };
        if durable[i] {
            continue;
        }
        let mut start = 0usize;
        while start < data.len() {
            let at = offset + start as u64;
            let to_boundary = usize::try_from(unit - at % unit).unwrap_or(usize::MAX);
            let end = start.saturating_add(to_boundary).min(data.len());
            units.push(Unit {
                op: i,
                device: *device,
                offset: at,
                start,
                end,
            });
            start = end;
        }
    }
    units
}

/// The subsets of `n` units to try, without repeats.
fn subsets(n: usize, rng: &mut SplitMix64) -> Vec<(Vec<bool>, Choice)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut push = |landed: Vec<bool>, choice| {
        if seen.insert(landed.clone()) {
            out.push((landed, choice));
        }
    };
    if n <= EXHAUSTIVE_UNITS {
        for mask in 0u32..(1 << n) {
            push(
                (0..n).map(|i| mask & (1 << i) != 0).collect(),
                Choice::Exhaustive,
            );
        }
        return out;
    }
    for k in 0..=n {
        push((0..n).map(|i| i < k).collect(), Choice::Prefix);
    }
    for k in 0..n {
        push((0..n).map(|i| i == k).collect(), Choice::Single);
        push((0..n).map(|i| i != k).collect(), Choice::AllButOne);
    }
    for _ in 0..RANDOM_SUBSETS {
        push(
            (0..n).map(|_| rng.next_u64() & 1 == 1).collect(),
            Choice::Random,
        );
    }
    out
}

/// A small seeded generator (SplitMix64): reproducible crash states
/// without a dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no device {name}"))
}

fn past_end(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{name}: access past the end of the device"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> (Recorder, RecordingStorage, RecordingStorage) {
        let r = Recorder::new();
        r.add_device("a", vec![0; 2048]).unwrap();
        r.add_device("b", vec![0; 1024]).unwrap();
        let a = r.open("a").unwrap();
        let b = r.open("b").unwrap();
        (r, a, b)
    }

    #[test]
    fn a_sync_makes_only_its_own_device_durable() {
        let (r, mut a, mut b) = recorder();
        a.write_at(0, &[1; 10]).unwrap();
        b.write_at(0, &[2; 10]).unwrap();
        b.sync().unwrap();
        // Crash points: before b's sync (both in flight) and the end (a's
        // write still in flight, b's durable).
        let states = r.crash_states(0..r.len(), 1);
        let at_end: Vec<_> = states.iter().filter(|s| s.at == 3).collect();
        assert_eq!(at_end.len(), 2, "a's one unit landed or not");
        for s in &at_end {
            let disk = r.disk(s);
            assert_eq!(&disk.get("b").unwrap()[..10], &[2; 10]);
            let a_landed = s.landed[0];
            assert_eq!(disk.get("a").unwrap()[0], u8::from(a_landed));
        }
        let before_sync = states.iter().filter(|s| s.at == 2).count();
        assert_eq!(before_sync, 4, "two units, all subsets");
        assert_eq!(r.live("a").unwrap()[..10], [1; 10]);
    }

    #[test]
    fn in_flight_writes_tear_at_sector_boundaries() {
        let (r, mut a, _) = recorder();
        a.write_at(100, &[7; 1000]).unwrap();
        let units = in_flight_units(&r.ops(), SECTOR);
        let spans: Vec<_> = units.iter().map(|u| (u.offset, u.end - u.start)).collect();
        assert_eq!(spans, vec![(100, 412), (512, 512), (1024, 76)]);
        let fine = in_flight_units(&r.ops(), 300);
        assert_eq!(fine.len(), 4);
        assert_eq!((fine[0].offset, fine[0].end), (100, 200));
        let states = r.crash_states(0..r.len(), 1);
        assert_eq!(states.len(), 8);
        let torn = states
            .iter()
            .find(|s| s.landed == [false, true, false])
            .unwrap();
        let disk = r.disk(torn);
        let image = disk.get("a").unwrap();
        assert_eq!(image[511], 0);
        assert_eq!(image[512], 7);
        assert_eq!(image[1023], 7);
        assert_eq!(image[1024], 0);
    }

    #[test]
    fn many_units_get_prefixes_singles_and_seeded_random_subsets() {
        let (r, mut a, _) = recorder();
        a.write_at(0, &[9; 2048]).unwrap();
        a.write_at(0, &[8; 1024]).unwrap();
        let states = r.crash_states(0..r.len(), 7);
        let n = 6;
        assert!(n <= EXHAUSTIVE_UNITS && states.len() == 1 << n);
        let (r2, mut a2, _) = recorder();
        a2.write_at(0, &[9; 2048]).unwrap();
        a2.write_at(0, &[1; 2048]).unwrap();
        a2.write_at(0, &[2; 2048]).unwrap();
        let states = r2.crash_states(0..r2.len(), 7);
        assert!(states.iter().any(|s| s.choice == Choice::Random));
        assert!(states.len() > 12 + 1 + 24);
        let again = r2.crash_states(0..r2.len(), 7);
        let masks = |v: &[CrashState]| v.iter().map(|s| s.landed.clone()).collect::<Vec<_>>();
        assert_eq!(masks(&states), masks(&again), "same seed, same states");
        // The later write wins where both landed.
        let all = states.iter().find(|s| s.landed.iter().all(|l| *l)).unwrap();
        assert_eq!(r2.disk(all).get("a").unwrap(), &[2; 2048][..]);
    }

    #[test]
    fn devices_have_a_fixed_size_and_must_exist() {
        let (r, mut a, _) = recorder();
        assert!(a.write_at(2047, &[1, 2]).is_err());
        assert!(r.open("c").is_err());
        assert!(r.add_device("a", vec![]).is_err());
        assert!(r.is_empty(), "a refused write is not logged");
    }
}
