//! The Prometheus alerts shipped in `deploy/prometheus/alerts.yml` are valid rules and
//! fire (and stay quiet) as `alerts.test.yml` says, checked by the real `promtool`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn promtool(args: &[&str]) -> std::process::Output {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run promtool ({error}): install it (Debian: apt-get install \
                 prometheus; scripts/test does) and run the tests again"
            )
        })
}

#[test]
fn the_alert_rules_are_valid_and_fire_as_their_tests_say() {
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"][..],
    ] {
        let output = promtool(args);
        assert!(
            output.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
