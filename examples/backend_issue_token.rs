//! How a backend mints the first heartbeat token of a playback.
//!
//! The backend knows the user, the asset and the user's plan (how many streams at once);
//! it seals that as `heartbeat_data` with the key it shares with the heartbeat server and
//! hands the token to the player. Three ways, the same token format:
//!
//! 1. Rust: `TokenCodec::seal` (this example).
//! 2. Shell: `SHARED_KEY=... heartbeat-server issue-token --user 13 --asset 14 --limit 2`.
//! 3. HTTP: `POST /admin/tokens` with the heartbeat data, `Authorization: Bearer $ADMIN_KEY`.
//!
//! Run: `cargo run -p heartbeat-examples --example backend_issue_token`

use heartbeat_core::{HeartbeatData, RejectStrategy, TokenCodec, TokenFormat};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shared_key = "the key the backend shares with the heartbeat server";
    let data = HeartbeatData::builder(13, "movie-14") // user 13 stays a number in every token
        .cycle(30.0) // the player beats every 30 s...
        .upper_tolerance(10.0) // ...and may be 10 s late before its session ends
        .lower_tolerance(2.0)
        .strategy(RejectStrategy::LeastRecent) // over the limit, the oldest device stops
        .session_limit(2) // the user's plan: two streams at once
        .checking_threshold(1)
        .sessions_edge(6)
        .extra("plan", "family") // unknown fields travel along untouched
        .build()?;

    let v2 = TokenCodec::new(shared_key)?;
    let token = v2.seal(&data)?;
    println!("v2 token (authenticated, the default): {token}");

    // Fleets that still run Node.js servers beside this one issue CryptoJS tokens.
    let legacy = TokenCodec::new(shared_key)?.issuing(TokenFormat::Legacy);
    let old_style = legacy.seal(&data)?;
    println!("legacy token (CryptoJS, what Node.js backends issue): {old_style}");

    // The server opens both; anything else is refused with one answer (406).
    for sealed in [&token, &old_style] {
        let opened = v2.open(sealed)?;
        assert_eq!(opened.user_id, data.user_id);
        assert!(
            opened.session_id.is_none(),
            "a backend token has no session yet"
        );
    }
    println!(
        "both open to user {} playing {}",
        data.user_id, data.asset_id
    );
    assert!(v2.open("tampered").is_err());
    println!("a tampered token is refused: \"Heartbeat token is not valid.\"");
    println!(
        "same from a shell: SHARED_KEY=... heartbeat-server issue-token --user 13 --asset movie-14 --limit 2"
    );
    Ok(())
}
