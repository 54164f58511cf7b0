//! A "new depot" that cannot start, for the upgrade tests under Wine's SCM
//! (ci/windows-e2e/upgrade.sh): it answers `--version` as depot does, so `depot upgrade` accepts
//! it, and otherwise says why it fails and exits 7 at once, before it could serve.

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("depot 9.9.9-broken");
        return;
    }
    eprintln!("upgrade_broken: this build cannot start (exit 7)");
    std::process::exit(7);
}
