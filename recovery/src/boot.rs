//! The boot-selection model: which slot the bootloader boots, from
//! `BOOT_ORDER` and `BOOT_A_LEFT`/`BOOT_B_LEFT`, as RAUC's U-Boot
//! integration (`contrib/uboot.sh`) does it. Sans-IO: it reads and changes an
//! [`Env`]; storing that env is the caller's one atomic write.
//!
//! The U-Boot script and GRUB config we ship must make the same decision as
//! [`BootState::decide`]; the tests here are the specification they follow.
//! Invariants (property-tested): a slot with 0 tries left is never booted;
//! while a slot in the order has tries, one is booted; a "reset tries and
//! reboot" is always followed by a boot, so there is no boot loop.

use std::fmt;

use crate::env::Env;

/// Tries a slot gets when it is activated, marked good, or when no slot has
/// tries left (RAUC's default `boot-attempts`).
pub const DEFAULT_TRIES: u8 = 3;

/// Largest tries value we write. U-Boot's `setexpr` writes hex and `test`
/// reads decimal, so only single digits mean the same to both.
pub const MAX_TRIES: u8 = 9;

/// Variable holding the boot order, e.g. `"A B"`.
pub const BOOT_ORDER: &str = "BOOT_ORDER";

/// One of the two root file system slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// Slot A (the factory image).
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// Both slots.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"A"` or `"B"`, as in `BOOT_ORDER` and `rauc.slot=`.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    /// `BOOT_A_LEFT` or `BOOT_B_LEFT`.
    pub fn tries_var(self) -> &'static str {
        match self {
            Slot::A => "BOOT_A_LEFT",
            Slot::B => "BOOT_B_LEFT",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the bootloader does on this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Boot this slot (one of its tries has been used up).
    Boot(Slot),
    /// No slot in the order had tries left: every slot got
    /// [`DEFAULT_TRIES`] again, save the env and reset the board. The next
    /// decision is always a [`Decision::Boot`].
    ResetTriesAndReboot,
}

/// The boot-selection variables, parsed the way the boot script reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootState {
    order: Vec<Slot>,
    left: [u8; 2],
}

impl Default for BootState {
    /// What an empty environment means: `"A B"`, [`DEFAULT_TRIES`] each.
    fn default() -> BootState {
        BootState {
            order: vec![Slot::A, Slot::B],
            left: [DEFAULT_TRIES; 2],
        }
    }
}

impl BootState {
    /// Reads the variables as the boot script does:
    /// - `BOOT_ORDER` unset or empty → `"A B"`; words other than `A`/`B`
    ///   are skipped and repeats count once. Unlike RAUC's example script,
    ///   an order naming no known slot also means `"A B"`: the script would
    ///   reset tries and reboot forever, and ours must not.
    /// - `BOOT_x_LEFT` unset or empty → [`DEFAULT_TRIES`]; otherwise its
    ///   leading decimal digits as U-Boot's `test -gt` reads them (none → 0,
    ///   so garbage means "no tries").
    pub fn from_env(env: &Env) -> BootState {
        let mut order = Vec::new();
        for word in env.get(BOOT_ORDER).unwrap_or("").split_whitespace() {
            let slot = match word {
                "A" => Slot::A,
                "B" => Slot::B,
                _ => continue,
            };
            if !order.contains(&slot) {
                order.push(slot);
            }
        }
        if order.is_empty() {
            order = vec![Slot::A, Slot::B];
        }
        let tries = |slot: Slot| match env.get(slot.tries_var()) {
            None | Some("") => DEFAULT_TRIES,
            Some(v) => leading_decimal(v),
        };
        BootState {
            order,
            left: [tries(Slot::A), tries(Slot::B)],
        }
    }

    /// Writes all three variables into `env`.
    pub fn apply_to(&self, env: &mut Env) {
        let order: Vec<&str> = self.order.iter().map(|s| s.name()).collect();
        // Names and values here are constants and digits: always valid.
        let _ = env.set(BOOT_ORDER, &order.join(" "));
        for slot in Slot::ALL {
            let _ = env.set(slot.tries_var(), &self.tries_left(slot).to_string());
        }
    }

    /// Slots in boot order (never empty).
    pub fn order(&self) -> &[Slot] {
        &self.order
    }

    /// Tries left for `slot`.
    pub fn tries_left(&self, slot: Slot) -> u8 {
        self.left[slot.index()]
    }

    /// The first slot in the order (the one an update activated).
    pub fn primary(&self) -> Slot {
        self.order[0]
    }

    /// The bootloader's decision, with its effect on the variables: the
    /// first slot in the order with tries left loses one and is booted;
    /// if there is none, every slot gets [`DEFAULT_TRIES`] and the board
    /// resets.
    pub fn decide(&mut self) -> Decision {
        for &slot in &self.order {
            let left = &mut self.left[slot.index()];
            if *left > 0 {
                *left -= 1;
                return Decision::Boot(slot);
            }
        }
        self.left = [DEFAULT_TRIES; 2];
        Decision::ResetTriesAndReboot
    }

    /// Makes `slot` the one to boot next: first in the order (the other
    /// slot stays second, so a failing `slot` falls back to it) with
    /// [`DEFAULT_TRIES`]. Order and tries change together, so one env write
    /// stores both.
    pub fn activate(&mut self, slot: Slot) {
        self.order = vec![slot, slot.other()];
        self.left[slot.index()] = DEFAULT_TRIES;
    }

    /// The running `slot` booted fine: give it its tries back.
    pub fn mark_good(&mut self, slot: Slot) {
        self.left[slot.index()] = DEFAULT_TRIES;
    }

    /// `slot` must not be booted again until activated or until no slot has
    /// tries left.
    pub fn mark_bad(&mut self, slot: Slot) {
        self.left[slot.index()] = 0;
    }
}

/// The leading decimal digits after spaces, clamped to [`MAX_TRIES`]: what
/// both boot scripts read (they skip spaces only, and count anything above
/// 9 as 9). We never write such values; a hand-edited env gets the same
/// decision from the scripts and from this model.
fn leading_decimal(s: &str) -> u8 {
    let mut n: u32 = 0;
    for b in s.trim_start_matches(' ').bytes() {
        if !b.is_ascii_digit() {
            break;
        }
        n = (n * 10 + u32::from(b - b'0')).min(u32::from(MAX_TRIES));
    }
    n as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut e = Env::new();
        for (k, v) in pairs {
            e.set(k, v).unwrap();
        }
        e
    }

    #[test]
    fn empty_env_boots_a_with_default_tries() {
        let mut s = BootState::from_env(&Env::new());
        assert_eq!(s, BootState::default());
        assert_eq!(s.decide(), Decision::Boot(Slot::A));
        assert_eq!(s.tries_left(Slot::A), DEFAULT_TRIES - 1);
        let mut e = Env::new();
        s.apply_to(&mut e);
        assert_eq!(
            e.to_string(),
            "BOOT_A_LEFT=2\nBOOT_B_LEFT=3\nBOOT_ORDER=A B\n"
        );
    }

    #[test]
    fn parses_like_the_boot_script() {
        let s = BootState::from_env(&env(&[
            ("BOOT_ORDER", " B  junk A B "),
            ("BOOT_A_LEFT", "2x"),
            ("BOOT_B_LEFT", "x"),
        ]));
        assert_eq!(s.order(), &[Slot::B, Slot::A]);
        assert_eq!(s.tries_left(Slot::A), 2);
        assert_eq!(s.tries_left(Slot::B), 0);
        let s = BootState::from_env(&env(&[("BOOT_ORDER", "C"), ("BOOT_A_LEFT", "")]));
        assert_eq!(s.order(), &[Slot::A, Slot::B]);
        assert_eq!(s.tries_left(Slot::A), DEFAULT_TRIES);
        assert_eq!(leading_decimal("999"), MAX_TRIES);
        assert_eq!(leading_decimal("  12"), MAX_TRIES);
        assert_eq!(leading_decimal("\t2"), 0);
    }

    #[test]
    fn failing_update_falls_back_after_its_tries() {
        let mut s = BootState::default();
        s.activate(Slot::B);
        for _ in 0..DEFAULT_TRIES {
            assert_eq!(s.decide(), Decision::Boot(Slot::B));
        }
        // B never marked itself good: A takes over.
        assert_eq!(s.decide(), Decision::Boot(Slot::A));
        s.mark_good(Slot::A);
        assert_eq!(s.decide(), Decision::Boot(Slot::A));
    }

    #[test]
    fn good_update_stays() {
        let mut s = BootState::default();
        s.activate(Slot::B);
        for _ in 0..10 {
            assert_eq!(s.decide(), Decision::Boot(Slot::B));
            s.mark_good(Slot::B);
        }
    }

    #[test]
    fn no_tries_anywhere_resets_then_boots_primary() {
        let mut s = BootState::default();
        s.mark_bad(Slot::A);
        s.mark_bad(Slot::B);
        assert_eq!(s.decide(), Decision::ResetTriesAndReboot);
        assert_eq!(s.tries_left(Slot::A), DEFAULT_TRIES);
        assert_eq!(s.tries_left(Slot::B), DEFAULT_TRIES);
        assert_eq!(s.decide(), Decision::Boot(Slot::A));
    }

    #[test]
    fn activate_is_one_env_change() {
        let mut e = env(&[("BOOT_ORDER", "A B"), ("BOOT_B_LEFT", "0"), ("other", "x")]);
        let mut s = BootState::from_env(&e);
        s.activate(Slot::B);
        s.apply_to(&mut e);
        assert_eq!(e.get("BOOT_ORDER"), Some("B A"));
        assert_eq!(e.get("BOOT_B_LEFT"), Some("3"));
        assert_eq!(e.get("other"), Some("x"));
    }

    fn any_env() -> impl Strategy<Value = Env> {
        let order = proptest::option::of(
            proptest::collection::vec(prop_oneof!["A", "B", "C", ""], 0..4)
                .prop_map(|w| w.join(" ")),
        );
        let tries = || proptest::option::of(prop_oneof!["[0-9]", "", "[a-z0-9]{1,3}"]);
        (order, tries(), tries()).prop_map(|(o, a, b)| {
            let mut e = Env::new();
            if let Some(o) = o {
                e.set(BOOT_ORDER, &o).unwrap();
            }
            if let Some(a) = a {
                e.set("BOOT_A_LEFT", &a).unwrap();
            }
            if let Some(b) = b {
                e.set("BOOT_B_LEFT", &b).unwrap();
            }
            e
        })
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Boot,
        Activate(Slot),
        Good(Slot),
        Bad(Slot),
    }

    fn any_op() -> impl Strategy<Value = Op> {
        let slot = prop_oneof![Just(Slot::A), Just(Slot::B)];
        prop_oneof![
            3 => Just(Op::Boot),
            1 => slot.clone().prop_map(Op::Activate),
            1 => slot.clone().prop_map(Op::Good),
            1 => slot.prop_map(Op::Bad),
        ]
    }

    proptest! {
        #[test]
        fn decision_never_boots_a_slot_without_tries(e in any_env()) {
            let before = BootState::from_env(&e);
            let mut after = before.clone();
            match after.decide() {
                Decision::Boot(slot) => {
                    prop_assert!(before.tries_left(slot) > 0);
                    prop_assert_eq!(after.tries_left(slot), before.tries_left(slot) - 1);
                    prop_assert_eq!(after.tries_left(slot.other()), before.tries_left(slot.other()));
                    // It is the first slot in the order with tries.
                    let first = before.order().iter().find(|s| before.tries_left(**s) > 0);
                    prop_assert_eq!(first, Some(&slot));
                }
                Decision::ResetTriesAndReboot => {
                    for s in before.order() {
                        prop_assert_eq!(before.tries_left(*s), 0);
                    }
                    let next = after.decide();
                    prop_assert_eq!(next, Decision::Boot(before.primary()));
                }
            }
        }

        #[test]
        fn env_round_trip(e in any_env()) {
            let s = BootState::from_env(&e);
            let mut out = Env::new();
            s.apply_to(&mut out);
            prop_assert_eq!(BootState::from_env(&out), s);
        }

        #[test]
        fn activated_slot_boots_next(e in any_env(), slot in prop_oneof![Just(Slot::A), Just(Slot::B)]) {
            let mut s = BootState::from_env(&e);
            s.activate(slot);
            let mut written = Env::new();
            s.apply_to(&mut written);
            let mut s = BootState::from_env(&written);
            prop_assert_eq!(s.decide(), Decision::Boot(slot));
        }

        #[test]
        fn any_history_keeps_both_slots_reachable_and_no_boot_loop(
            e in any_env(),
            ops in proptest::collection::vec(any_op(), 0..40),
        ) {
            let mut s = BootState::from_env(&e);
            let mut last_was_reset = false;
            for op in ops {
                match op {
                    Op::Boot => {
                        let d = s.decide();
                        if d == Decision::ResetTriesAndReboot {
                            prop_assert!(!last_was_reset, "two resets in a row");
                        }
                        last_was_reset = d == Decision::ResetTriesAndReboot;
                    }
                    // A booted system changing the variables starts over.
                    Op::Activate(slot) => { s.activate(slot); last_was_reset = false; }
                    Op::Good(slot) => { s.mark_good(slot); last_was_reset = false; }
                    Op::Bad(slot) => { s.mark_bad(slot); last_was_reset = false; }
                }
                prop_assert!(!s.order().is_empty());
            }
            // Whatever happened, a slot that never marks itself good is
            // left after its tries, for the other slot when that one is in
            // the order and has tries.
            let mut s2 = s.clone();
            let first = s2.primary();
            if s2.order().len() == 2 && s2.tries_left(first.other()) > 0 {
                let mut booted_other = false;
                for _ in 0..=s2.tries_left(first) {
                    if s2.decide() == Decision::Boot(first.other()) {
                        booted_other = true;
                        break;
                    }
                }
                prop_assert!(booted_other);
            }
        }
    }
}
