//! A family plan (SPEC §3.7, §3.8) against a real server: one user, two streams at once,
//! at most one TV (`{"tv": 1, "mobile": 2}`), and devices that are told why and can choose.
//!
//! 1. The tablet and the living-room TV play.
//! 2. The bedroom TV is refused with `family_limit`: the plan has room for one TV.
//! 3. The phone is refused with `over_limit`; the refusal lists the tablet and the
//!    living-room TV, and the user chooses "watch here instead" of the tablet.
//! 4. The tablet, which follows its session's notices, is told at once (`taken_over`, by
//!    the phone), long before its next heartbeat would have been refused.
//!
//! Run: `cargo run -p heartbeat-examples --example family_plan`

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use heartbeat_core::sessions::PlayingSession;
use heartbeat_core::{HeartbeatData, RejectStrategy, TokenCodec};
use heartbeat_examples::LocalServer;
use heartbeat_http::Settings;
use heartbeat_http::client::player::{
    Player, PlayerEvent, PlayerEvents, PlayerOptions, StopReason,
};

const KEY: &str = "family plan example key";
/// The tablet's cycle is long, so that its notice visibly comes before its next beat.
const TABLET_CYCLE: Duration = Duration::from_secs(20);
const CYCLE: Duration = Duration::from_millis(500);

/// What the backend issues for `device` of user 42 (`family`), under the family plan.
fn token(codec: &TokenCodec, device: &str, family: &str, cycle: Duration) -> String {
    let data = HeartbeatData::builder(42, "movie-7")
        .cycle(cycle.as_secs_f64())
        .upper_tolerance(2.0)
        .strategy(RejectStrategy::MostRecent)
        .session_limit(2)
        .checking_threshold(1)
        .device(device)
        .device_family(family)
        .family_limit("tv", 1)
        .family_limit("mobile", 2)
        .build()
        .expect("valid plan data");
    codec.seal(&data).expect("a sealable token")
}

fn options(url: &str, token: String, cycle: Duration, follow_notices: bool) -> PlayerOptions {
    PlayerOptions {
        url: url.to_owned(),
        token,
        cycle,
        upper_tolerance: Duration::from_secs(2),
        progress: None,
        follow_notices,
    }
}

/// Waits for the player's first accepted heartbeat.
async fn playing(events: &mut PlayerEvents) -> Result<(), Box<dyn std::error::Error>> {
    match events.next().await {
        Some(PlayerEvent::Accepted { .. }) => Ok(()),
        other => Err(format!("expected an accepted heartbeat, got {other:?}").into()),
    }
}

/// Waits until the player stops, and says why.
async fn stopped(events: &mut PlayerEvents) -> Result<StopReason, Box<dyn std::error::Error>> {
    while let Some(event) = events.next().await {
        if let PlayerEvent::Stopped(reason) = event {
            return Ok(reason);
        }
    }
    Err("the player ended without saying why".into())
}

fn labels(sessions: &[PlayingSession]) -> String {
    let labels: Vec<&str> = sessions
        .iter()
        .map(|session| session.device.as_deref().unwrap_or("a device"))
        .collect();
    labels.join(", ")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let codec = TokenCodec::new(KEY)?;
    let server = LocalServer::start(codec.clone(), Settings::default()).await?;
    let url = server.url().to_owned();
    println!("server on {url}; plan: 2 streams, {{\"tv\": 1, \"mobile\": 2}}");

    let tablet_token = token(&codec, "Tablet", "mobile", TABLET_CYCLE);
    let (tablet, mut tablet_events) =
        Player::start(options(&url, tablet_token, TABLET_CYCLE, true));
    playing(&mut tablet_events).await?;
    println!("tablet plays (and follows its notices)");
    let living_room_token = token(&codec, "Living-room TV", "tv", CYCLE);
    let (living_room, mut living_room_events) =
        Player::start(options(&url, living_room_token, CYCLE, false));
    playing(&mut living_room_events).await?;
    println!("living-room TV plays");

    // MOST_RECENT: a newcomer's first heartbeat is accepted, its next one is refused.
    let bedroom_token = token(&codec, "Bedroom TV", "tv", CYCLE);
    let (_bedroom, mut bedroom_events) = Player::start(options(&url, bedroom_token, CYCLE, false));
    match stopped(&mut bedroom_events).await? {
        StopReason::Refused {
            reason,
            limit,
            sessions,
        } => println!(
            "bedroom TV refused (412): {reason:?}, limit {limit:?}; playing: {}",
            labels(&sessions)
        ),
        other => return Err(format!("the bedroom TV was not refused: {other:?}").into()),
    }

    let phone_options = options(&url, token(&codec, "Phone", "mobile", CYCLE), CYCLE, false);
    let (phone, mut phone_events) = Player::start(phone_options.clone());
    let sessions = match stopped(&mut phone_events).await? {
        StopReason::Refused {
            reason,
            limit,
            sessions,
        } => {
            println!(
                "phone refused (412): {reason:?}, limit {limit:?}; playing: {}",
                labels(&sessions)
            );
            sessions
        }
        other => return Err(format!("the phone was not refused: {other:?}").into()),
    };
    let tablet_session = sessions
        .iter()
        .find(|session| session.device.as_deref() == Some("Tablet"))
        .ok_or("the tablet is not listed")?;
    println!("the user chooses: watch on the phone instead of the tablet");
    let asked = Instant::now();
    let takeover = PlayerOptions {
        token: phone.token(),
        ..phone_options
    };
    let (phone, mut phone_events) = Player::take_over(takeover, &tablet_session.session_id)
        .await
        .map_err(|reason| format!("the takeover failed: {reason:?}"))?;
    match stopped(&mut tablet_events).await? {
        StopReason::Ended(ended) => println!(
            "tablet told at once: {:?} by {} (its next heartbeat was {} s away)",
            ended.reason,
            ended
                .by
                .and_then(|by| by.device)
                .unwrap_or_else(|| "another device".into()),
            TABLET_CYCLE.as_secs()
        ),
        other => return Err(format!("the tablet was not told: {other:?}").into()),
    }
    let told_within = asked.elapsed();
    if told_within >= TABLET_CYCLE {
        return Err(format!("the tablet learned it only after {told_within:?}").into());
    }
    match phone_events.next().await {
        Some(PlayerEvent::Accepted { beat, .. }) => {
            println!("phone plays: heartbeat {beat} after the takeover accepted")
        }
        other => return Err(format!("the phone does not play: {other:?}").into()),
    }

    drop(tablet);
    phone.stop().await;
    living_room.stop().await;
    server.stop().await?;
    Ok(())
}
