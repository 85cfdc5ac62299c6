//! Several players of one user against a real server: the extra device is told to stop
//! (412), under both reject strategies.
//!
//! The user may play two streams at once. Three devices start one after the other; at the
//! third device's next heartbeat the server refuses one of them:
//! - `MOST_RECENT`: the newest device (the third) stops, the first two keep playing;
//! - `LEAST_RECENT` (the default): the oldest device (the first) stops — "kick the oldest".
//!
//! Run: `cargo run -p heartbeat-examples --example players`

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use heartbeat_core::{HeartbeatData, RejectStrategy, TokenCodec};
use heartbeat_examples::LocalServer;
use heartbeat_http::Settings;
use heartbeat_http::client::player::{
    Player, PlayerEvent, PlayerOptions, RefusalReason, StopReason,
};

const KEY: &str = "players example key";
const CYCLE: Duration = Duration::from_millis(300);

fn backend_token(
    codec: &TokenCodec,
    user: i64,
    strategy: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let strategy = RejectStrategy::from_wire(strategy).ok_or("an unknown reject strategy")?;
    let data = HeartbeatData::builder(user, 7)
        .cycle(CYCLE.as_secs_f64())
        .upper_tolerance(2.0)
        .strategy(strategy)
        .session_limit(2)
        .checking_threshold(1)
        .sessions_edge(5)
        .build()?;
    Ok(codec.seal(&data)?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let codec = TokenCodec::new(KEY)?;
    let server = LocalServer::start(codec.clone(), Settings::default()).await?;
    let url = server.url().to_owned();
    println!("server on {url}, session limit 2, three devices per user");
    let started = Instant::now();

    let mut failures = 0;
    for (user, strategy, expected_refused) in [(1, "MOST_RECENT", 3), (2, "LEAST_RECENT", 1)] {
        println!("\n== {strategy}");
        let mut players = Vec::new();
        for device in 1..=3 {
            let options = PlayerOptions {
                url: url.clone(),
                token: backend_token(&codec, user, strategy)?,
                cycle: CYCLE,
                upper_tolerance: Duration::from_secs(2),
                progress: None,
                follow_notices: false,
            };
            let (player, mut events) = Player::start(options);
            let log = tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    let at = started.elapsed().as_secs_f64();
                    match event {
                        PlayerEvent::Accepted { beat, .. } => {
                            println!("[{at:6.2}s] device {device}: heartbeat {beat} accepted")
                        }
                        PlayerEvent::Retrying { attempt, error } => {
                            println!("[{at:6.2}s] device {device}: retry {attempt}: {error}")
                        }
                        PlayerEvent::WouldRefuse { beat, reason, .. } => {
                            println!(
                                "[{at:6.2}s] device {device}: heartbeat {beat} would be refused \
                                 ({reason:?}; the limits are report-only)"
                            )
                        }
                        PlayerEvent::Stopped(reason) => {
                            println!("[{at:6.2}s] device {device}: stopped: {reason:?}")
                        }
                        other => println!("[{at:6.2}s] device {device}: {other:?}"),
                    }
                }
            });
            players.push((device, player, log));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        tokio::time::sleep(CYCLE * 4).await;
        for (device, player, log) in players {
            let reason = if player.is_finished() {
                player.finished().await
            } else {
                player.stop().await
            };
            let _ = log.await;
            let refused = matches!(
                reason,
                StopReason::Refused {
                    reason: RefusalReason::OverLimit,
                    ..
                }
            );
            println!(
                "device {device}: {}",
                if refused {
                    "refused (412)"
                } else {
                    "kept playing"
                }
            );
            if refused != (device == expected_refused) {
                failures += 1;
                println!(
                    "  unexpected: device {expected_refused} should have been the one refused"
                );
            }
        }
    }
    server.stop().await?;
    if failures > 0 {
        return Err(format!("{failures} unexpected outcomes").into());
    }
    println!("\nok: MOST_RECENT refused the newest device, LEAST_RECENT the oldest");
    Ok(())
}
