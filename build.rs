//! Build metadata for `--version` and the `x402_build_info` metric: the git commit when built from a checkout (nothing breaks
//! without git or outside a repository), the target triple and the profile.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=X402_GATE_COMMIT");
    // A packager without the .git directory can still name the commit.
    let commit = std::env::var("X402_GATE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    if commit.is_some() {
        // Rebuild when the checked-out commit moves (worktrees keep HEAD and refs apart).
        let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(git(&["rev-parse", "--git-path", &head_ref]));
        }
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
        for path in watched.into_iter().flatten() {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    // The commit alone, for the `x402_build_info` metric.
    println!(
        "cargo:rustc-env=X402_GATE_COMMIT_ID={}",
        commit.as_deref().unwrap_or("unknown")
    );
    let build = match commit {
        Some(c) => format!("commit {c}, {target}, {profile}"),
        None => format!("{target}, {profile}"),
    };
    println!("cargo:rustc-env=X402_GATE_BUILD={build}");
}
