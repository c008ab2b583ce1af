//! Hardware-in-the-loop harness for the Intrustd appliance.
//!
//! A [`rig::Rig`] presses the DUT's buttons and watches its LEDs; the
//! [`scenarios`] are written against that trait only, so the simulated
//! board ([`sim_rig::SimRig`], a real `intrustd` process) and later a QEMU
//! guest or a GPIO bench run the same checks. Each run leaves a JSON
//! [`record`]. The harness reads the agent's sockets through its own
//! [`wire`] types, written from `ARCHITECTURE.md`: it is an outside observer.

pub mod bench;
pub mod browser;
pub mod daemon;
pub mod expect;
pub mod record;
pub mod rig;
pub mod scenarios;
pub mod sim_rig;
pub mod taps;
pub mod wire;
