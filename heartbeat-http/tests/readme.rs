//! Every shell example of README and of docs/api.md, run in order with bash and curl
//! against this binary, exactly as printed (only the port differs), so that they stay
//! true: each block has only what an earlier block set.
#![allow(clippy::unwrap_used)]

use std::process::Command;

mod process;
use process::{BINARY, ServerProcess};

const SHARED_KEY: &str = "change-me-to-a-long-random-key";
/// The quick start's admin key: the admin block sets the same one, as a reader would.
const ADMIN_KEY: &str = "change-me-to-a-long-admin-key";

/// The ```sh blocks of a document of the repository, in order.
fn sh_blocks(document: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(format!("{}/../{document}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    text.split("```sh\n")
        .skip(1)
        .map(|block| block.split_once("```").unwrap().0.to_owned())
        .collect()
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn every_shell_example_of_readme_and_the_api_doc_works_as_printed() {
    assert!(has("curl") && has("bash"), "this test needs curl and bash");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(BINARY, dir.path().join("target/release/heartbeat-server")).unwrap();
    let server = ServerProcess::start(
        Some(dir.path()),
        &[
            ("SHARED_KEY", SHARED_KEY),
            ("ADMIN_KEY", ADMIN_KEY),
            ("JOB_TIME", "2000"),
        ],
    );
    let port = server.port;
    let here = format!("localhost:{port}");
    let run = |script: &str| {
        // A stream in the foreground (`curl -N` without `&`) is read for two seconds. One in
        // the background writes to a file, printed once it holds an event (at most 10 s).
        let mut background = 0;
        let script: Vec<String> = script
            .replace("localhost:3000", &here)
            .lines()
            .map(|line| {
                let command = line.split_once(" #").map_or(line, |(command, _)| command);
                let streams = line.contains(" -N ") || line.contains(" -sN ");
                match command.trim_end().strip_suffix(" &") {
                    Some(command) if streams => {
                        background += 1;
                        format!("{command} > stream-{background}.out 2>&1 &")
                    }
                    None if line.contains(" -N ") => format!("{command} --max-time 2 || true"),
                    _ => line.to_owned(),
                }
            })
            .collect();
        let events: String = (1..=background)
            .map(|n| {
                format!(
                    "for _ in $(seq 100); do grep -q '^event:' stream-{n}.out && break; \
                     sleep 0.1; done\ncat stream-{n}.out\n"
                )
            })
            .collect();
        let script = format!(
            "set -e\n{}\n{events}kill $(jobs -p) 2>/dev/null || true\n",
            script.join("\n")
        );
        let output = Command::new("bash")
            .args(["-c", &script])
            .current_dir(dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(output.status.success(), "{script}\n{stdout}\n{stderr}");
        stdout
    };

    // README: the first block starts the server (this test started it with the same
    // settings) and runs the tests; every other block runs as printed.
    let readme = sh_blocks("README.md");
    assert!(
        readme[0].contains(&format!(
            "SHARED_KEY={SHARED_KEY} ADMIN_KEY={ADMIN_KEY} JOB_TIME=2000 "
        )),
        "the quick start runs the server with other settings: {}",
        readme[0]
    );
    let mut outputs: Vec<String> = readme[1..].iter().map(|block| run(block)).collect();
    let api = sh_blocks("docs/api.md");
    outputs.extend(api.iter().map(|block| run(block)));
    assert_eq!(
        outputs.len(),
        3,
        "a block was added: give it an assertion below"
    );
    let (quick_start, admin, devices) = (&outputs[0], &outputs[1], &outputs[2]);
    assert!(
        quick_start.contains("{\"heartbeat_token\":\"v2."),
        "{quick_start}"
    );
    assert!(quick_start.contains("event: status_"), "{quick_start}");
    assert!(
        quick_start.contains("\"message\":\"completed\""),
        "{quick_start}"
    );
    assert!(admin.contains("{\"heartbeat_token\":"), "{admin}");
    assert!(
        admin.contains("{\"evicted\":"),
        "the session the quick start began: {admin}"
    );
    assert!(admin.contains("\"user_id\":13"), "{admin}");
    assert!(
        admin.contains("{\"complete\":true"),
        "the export's last line: {admin}"
    );
    assert!(
        devices.contains("\"limit\":1,\"reason\":\"over_limit\",\"sessions\":[{"),
        "{devices}"
    );
    assert!(
        devices.contains("\"device\":\"Living-room TV\""),
        "{devices}"
    );
    assert!(devices.contains("event: ended"), "{devices}");
    assert!(
        devices.contains("\"reason\":\"taken_over\",\"by\":{"),
        "{devices}"
    );
    assert!(
        devices.contains("\"limit\":null,\"reason\":\"taken_over\""),
        "{devices}"
    );
    drop(server);
}
