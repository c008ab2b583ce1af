//! How the binaries print a fatal error: the message and its causes on one
//! line, each cause once. Several of our errors show their source in their
//! own message too, so anyhow's `{:#}` would repeat it.

/// The error and its causes, skipping causes whose text the line already shows.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_shown_once() {
        let io = std::io::Error::other("no such file");
        let e = anyhow::Error::new(io)
            .context("opening board.toml: no such file")
            .context("loading the board profile");
        assert_eq!(
            error_chain(&e),
            "loading the board profile: opening board.toml: no such file"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
