//! Debian packages the recipes need. Each package is checked with
//! `dpkg-query` first; `apt-get update` and `apt-get install` run only when
//! something is missing, as root, through sudo, or not at all (then the exact
//! command to run is printed and we stop).

use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd::{self, say};

/// How we may run apt-get and dpkg.
enum Privilege {
    Root,
    Sudo,
}

fn privilege() -> Option<Privilege> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Some(Privilege::Root)
    } else if cmd::on_path("sudo") {
        Some(Privilege::Sudo)
    } else {
        None
    }
}

/// A command run as root: `sudo env VAR=… prog args` when we are not root
/// (`env` because sudo's policy may refuse `VAR=…` on its command line).
fn as_root(how: &Privilege, env: &[(&str, &str)], prog: &str, args: &[&str]) -> Command {
    let mut c = match how {
        Privilege::Root => {
            let mut c = Command::new(prog);
            c.envs(env.iter().copied());
            c
        }
        Privilege::Sudo => {
            let mut c = Command::new("sudo");
            c.arg("env");
            c.args(env.iter().map(|(k, v)| format!("{k}={v}")));
            c.arg(prog);
            c
        }
    };
    c.args(args);
    c
}

fn is_debian() -> bool {
    cmd::on_path("dpkg-query") && cmd::on_path("apt-get")
}

/// Whether `pkg` (may carry an `:arch` suffix) is installed.
pub fn installed(pkg: &str) -> bool {
    let mut c = Command::new("dpkg-query");
    c.args(["-W", "-f=${Status}", pkg]);
    match cmd::probe(&mut c) {
        // "install ok installed", "hold ok installed"; not "config-files" etc.
        Some((status, out)) => {
            status.success() && out.split_whitespace().last() == Some("installed")
        }
        None => false,
    }
}

/// Makes sure `arch` is a dpkg architecture (native or foreign), so
/// `pkg:arch` packages can be installed.
pub fn ensure_foreign_arch(arch: &str) -> Result<()> {
    if !is_debian() {
        bail!("this recipe needs a Debian 12 machine (dpkg and apt-get were not found)");
    }
    let native = cmd::probe(Command::new("dpkg").arg("--print-architecture"))
        .map(|(_, out)| out.trim().to_string())
        .unwrap_or_default();
    let foreign = cmd::probe(Command::new("dpkg").arg("--print-foreign-architectures"))
        .map(|(_, out)| out)
        .unwrap_or_default();
    if native == arch || foreign.lines().any(|l| l.trim() == arch) {
        return Ok(());
    }
    say(format!(
        "adding the dpkg architecture {arch} (for the cross-compiling packages)"
    ));
    let Some(how) = privilege() else {
        bail!(
            "the dpkg architecture {arch} is missing and we are neither root nor able to use sudo.\n\
             Run as root:\n    dpkg --add-architecture {arch}\nthen run this command again."
        );
    };
    cmd::run_log(&mut as_root(
        &how,
        &[],
        "dpkg",
        &["--add-architecture", arch],
    ))
}

/// Installs whatever of `packages` is missing.
pub fn ensure(why: &str, packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !is_debian() {
        bail!(
            "{why} needs the Debian packages {}, but dpkg/apt-get were not found; \
             this recipe is written for Debian 12",
            packages.join(" ")
        );
    }
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        say(format!(
            "{why}: Debian packages present ({})",
            packages.join(" ")
        ));
        return Ok(());
    }
    say(format!(
        "{why}: installing missing Debian packages: {}",
        missing.join(" ")
    ));
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    let frontend = [("DEBIAN_FRONTEND", "noninteractive")];
    let Some(how) = privilege() else {
        bail!(
            "we are neither root nor able to use sudo. Run as root:\n    \
             apt-get update && DEBIAN_FRONTEND=noninteractive apt-get {}\n\
             then run this command again.",
            install.join(" ")
        );
    };
    cmd::run_log(&mut as_root(&how, &frontend, "apt-get", &["update"]))?;
    if let Err(e) = cmd::run_log(&mut as_root(&how, &frontend, "apt-get", &install)) {
        if !missing.iter().any(|p| p.contains("rust-web")) {
            return Err(e);
        }
        bail!(
            "{e:#}\nIf apt-get could not find a package: rustc-web and libstd-rust-web-dev \
             come from the bookworm-security suite, which must be in the APT sources \
             (it is on a default Debian 12 install)."
        );
    }
    let still: Vec<&str> = missing.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!(
            "apt-get finished but these packages are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_passes_the_environment_through_env() {
        let c = as_root(
            &Privilege::Sudo,
            &[("DEBIAN_FRONTEND", "noninteractive")],
            "apt-get",
            &["install", "-y", "qemu-user"],
        );
        assert_eq!(
            cmd::display(&c),
            "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-user"
        );
    }

    #[test]
    fn root_runs_the_program_directly() {
        let c = as_root(
            &Privilege::Root,
            &[("DEBIAN_FRONTEND", "noninteractive")],
            "apt-get",
            &["update"],
        );
        assert_eq!(
            cmd::display(&c),
            "DEBIAN_FRONTEND=noninteractive apt-get update"
        );
    }

    #[test]
    fn installed_tells_present_from_absent() {
        if !is_debian() {
            return; // nothing to ask
        }
        assert!(installed("dpkg"));
        assert!(!installed("intrust-no-such-package"));
    }
}
