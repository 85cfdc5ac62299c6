/** Why a player stopped. */
export declare const StopReason: {
  readonly STOPPED: "stopped";
  readonly REFUSED: "refused";
  readonly ENDED: "ended";
  readonly INVALID_TOKEN: "invalid_token";
  readonly UNREACHABLE: "unreachable";
};
export type StopReason = (typeof StopReason)[keyof typeof StopReason];

/** Why the server refused a heartbeat: a 412's `reason`. `REPLAYED` and `EXPIRED` mean
 * this token cannot play any more: start again with a fresh backend token. */
export declare const RefusalReason: {
  readonly OVER_LIMIT: "over_limit";
  readonly FAMILY_LIMIT: "family_limit";
  readonly ASSET_LIMIT: "asset_limit";
  readonly SESSIONS_EDGE: "sessions_edge";
  readonly EVICTED: "evicted";
  readonly TAKEN_OVER: "taken_over";
  readonly REPLAYED: "replayed";
  readonly EXPIRED: "expired";
};
export type RefusalReason = (typeof RefusalReason)[keyof typeof RefusalReason];

/** A session that keeps playing, as a 412 lists it (authenticated sessions only). */
export interface PlayingSession {
  session_id: string;
  asset_id?: number | string | null;
  device?: string | null;
  device_family?: string | null;
  started_at?: string | null;
  last_seen: string;
}

/** Why the server refused this player (a 412). */
export interface Refusal {
  /** One of {@link RefusalReason}; `null` from a server that gives no reason (the Node
   * server); another string from a newer server. */
  reason: RefusalReason | string | null;
  /** The limit that is full; `null` for `evicted`, `taken_over`, `replayed`, `expired` or
   * no reason. */
  limit: number | null;
  /** The sessions that keep playing: "Playing on: Living-room TV, Phone". Empty when the
   * server lists none (a session begun with a legacy token, the Node server). */
  sessions: PlayingSession[];
  /** The 412's `error` text. */
  message: string;
}

/** The pushed notice of a session someone else ended (`GET /heartbeat/events`). */
export interface EndedNotice {
  session_id?: string;
  reason?: "evicted" | "taken_over" | "displaced" | string;
  by?: { session_id: string; device?: string | null } | null;
}

/** What failed: `network`, `http` (any status but 412 and 406: retried), `invalid_token` (406),
 * `unreachable` (gave up), `protocol`. `fatal` when the player stopped because of it. */
export declare class HeartbeatError extends Error {
  readonly kind: "network" | "http" | "invalid_token" | "unreachable" | "protocol";
  readonly status?: number;
  readonly fatal: boolean;
  /** A 406 on an authentic (`v2`, `v3`, `b1`) token: `missing_field` or `invalid_field`;
   * on any token whose answer would pass the token length limit: `too_large`. */
  readonly reason: string | null;
  /** With `reason`: the field of the token's data that is wrong. */
  readonly field: string | null;
}

/** What enforced limits would have told a player that report-only limits let play. */
export interface WouldRefuse {
  /** `over_limit`, `family_limit` or `asset_limit`. */
  readonly reason: string;
  /** The limit that applied. */
  readonly limit: number | null;
}

export interface HeartbeatOptions {
  /** The heartbeat server, e.g. `https://heartbeat.example.com`. */
  url: string;
  /** The first token of the playback, from the backend (or one kept from before). */
  token: string;
  /** The heartbeat cycle in seconds: the `heartbeat_cycle` the backend put in the token. */
  cycle: number;
  /** `cycle_upper_tolerance` in seconds (default: half the cycle): how long failed
   * heartbeats are retried before the player gives up. */
  upperTolerance?: number;
  /** The playback position in seconds, sent with every heartbeat. */
  progress?: () => number | undefined;
  /** Follow `/heartbeat/events` with `EventSource` when there is one (default true). */
  followNotices?: boolean;
  /** Stop the session when the page goes away (`pagehide`: the tab closed, reloaded or
   * navigated from), with a `keepalive` request that outlives the page, so that another
   * device of the user may play at once (default true). Without it the slot frees itself
   * `cycle + upperTolerance` after the last heartbeat. */
  releaseOnPageHide?: boolean;
  /** Where `pagehide` is listened for (default: the global object, the window). */
  page?: Pick<EventTarget, "addEventListener" | "removeEventListener"> | null;
  /** Every accepted heartbeat, with the token to keep (e.g. in `localStorage`). */
  onAccepted?: (token: string) => void;
  /** The server refused this player: stop playback and say why; offer `takeOver`. A
   * pushed `displaced` notice (refused under the limits) arrives here too: the client
   * heartbeats at once to learn the reason and the devices playing. */
  onRefused?: (refusal: Refusal) => void;
  /** The server's limits are report-only (SPEC §3.8) and would have refused this
   * heartbeat: playback goes on; log it to measure sharing before limits are enforced. */
  onWouldRefuse?: (wouldRefuse: WouldRefuse) => void;
  /** Someone else ended this session (`evicted`, `taken_over`; a pushed notice): stop
   * playback at once. */
  onEnded?: (notice: EndedNotice) => void;
  /** A failure; retried unless `error.fatal`. */
  onError?: (error: HeartbeatError) => void;
  /** `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** `EventSource` to use (default: the global one; `null` for none). */
  EventSource?: typeof EventSource | null;
}

export interface HeartbeatHandle {
  /** The current token: keep it, send it after a reload. */
  readonly token: string;
  /** True while heartbeating. */
  readonly running: boolean;
  /** Resolves when the player stops (a new promise after a takeover). */
  readonly stopped: Promise<StopReason>;
  /** Ends the session now and frees its slot (`POST /heartbeat/stop`). */
  stop(): Promise<void>;
  /** "Watch here instead": ends `sessionId` and plays here. False when that session is
   * no longer active. */
  takeOver(sessionId: string): Promise<boolean>;
}

/** Starts heartbeating; the first heartbeat goes at once. */
export declare function startHeartbeat(options: HeartbeatOptions): HeartbeatHandle;
