//! The Intrustd appliance agent.
