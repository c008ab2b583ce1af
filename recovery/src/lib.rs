//! A/B slots, boot counting, rollback, signed update bundles and factory
//! reset. Not built yet: the agent's `Recovery` trait (in `intrust-agent`)
//! is what this crate will implement for the agent.
