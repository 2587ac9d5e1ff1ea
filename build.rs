//! Build metadata for `--version` and the `x402_build_info` metric: the git commit when built
//! from a checkout (nothing breaks without git or outside a repository), the target triple and
//! the profile. And the dashboard: every file of `dashboard/dist` (built from `dashboard/src` by
//! Vite and committed), embedded with `include_bytes!` so the binary is the whole product.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `$OUT_DIR/dashboard_assets.rs`: `ASSETS`, each file of `dashboard/dist` by its path
/// relative to it (empty when there is no build; the dashboard then says so).
fn embed_dashboard() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard/dist");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut code = String::from("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        code.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            f.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("dashboard_assets.rs");
    std::fs::write(out, code).unwrap();
}

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
    embed_dashboard();
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
