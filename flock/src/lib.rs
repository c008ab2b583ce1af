//! The rendezvous service and the browser client. Not built yet: see the
//! peer connection issue. flock is untrusted by design: it relays signalling
//! and never sees a password, a token or app data.
