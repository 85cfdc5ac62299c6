// The heartbeat protocol for web players (docs/web-player.md): heartbeats timed from the
// answer's arrival, refusals with their reason and the devices playing, "watch here
// instead", pushed "ended" notices, and stop. No runtime dependency; types in
// heartbeat.d.ts.

const MAX_BACKOFF_MS = 5000;
// A notice stream that was open and closed is opened again this soon, with the current
// token: within the server's grace (GONE_GRACE_SECS, 5 s by default), so a network blip
// does not let the session go.
const REOPEN_NOTICES_MS = 1000;

/** Why a player stopped, as `stopped` resolves. */
export const StopReason = Object.freeze({
  STOPPED: "stopped", // stop() was called
  REFUSED: "refused", // a 412: onRefused said why
  ENDED: "ended", // a pushed notice: onEnded said why
  INVALID_TOKEN: "invalid_token", // a 406: the backend must issue a new token
  UNREACHABLE: "unreachable", // no answer within cycle + upper tolerance
});

/** Why the server refused a heartbeat (a 412's `reason`; SPEC §3.2, §3.7, §3.8). */
export const RefusalReason = Object.freeze({
  OVER_LIMIT: "over_limit", // more devices than the plan allows
  FAMILY_LIMIT: "family_limit", // as many devices of this family as the plan allows
  ASSET_LIMIT: "asset_limit", // this title on as many devices as the plan allows
  SESSIONS_EDGE: "sessions_edge", // too many sessions open
  EVICTED: "evicted", // an administrator ended this session
  TAKEN_OVER: "taken_over", // another device took this session over
  REPLAYED: "replayed", // a token the playback moved past: start with a fresh backend token
  EXPIRED: "expired", // too old to start or resume: start with a fresh backend token
});

/** An error handed to `onError`: `kind` says what failed, `fatal` whether it stopped;
 * for a 406 on an authentic token, `reason` (`missing_field`, `invalid_field`) and `field`
 * say what the backend put wrong in it; `too_large` says its data are too large for the
 * server to answer. */
export class HeartbeatError extends Error {
  constructor(kind, message, { status, fatal = false, cause, reason, field } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "HeartbeatError";
    this.kind = kind;
    this.status = status;
    this.fatal = fatal;
    this.reason = reason ?? null;
    this.field = field ?? null;
  }
}

const trimSlash = (url) => url.replace(/\/+$/, "");

/** Seconds to wait from a `Retry-After` header (seconds or an HTTP date), if any. */
function retryAfterMs(response) {
  const value = response.headers.get("retry-after");
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

async function bodyOf(response) {
  try {
    return await response.json();
  } catch {
    return {};
  }
}

/**
 * Starts heartbeating `options.token` to `options.url` every `options.cycle` seconds.
 * See heartbeat.d.ts for every option and callback.
 */
export function startHeartbeat(options) {
  const url = trimSlash(options.url);
  const cycleMs = Number(options.cycle) * 1000;
  if (!(cycleMs > 0)) throw new TypeError("cycle must be a positive number of seconds");
  const toleranceMs = Number(options.upperTolerance ?? options.cycle / 2) * 1000;
  // Like the Rust player: a little after the cycle, never before it by the server's clock.
  const delayMs = cycleMs + Math.min(toleranceMs / 4, 250);
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const EventSourceImpl =
    options.EventSource === undefined ? globalThis.EventSource : options.EventSource;
  const follow = options.followNotices !== false && typeof EventSourceImpl === "function";
  // The page's own events (`pagehide`); tests give a stand-in.
  const page = options.page === undefined ? globalThis : options.page;
  const letGo =
    options.releaseOnPageHide !== false && typeof page?.addEventListener === "function";
  const call = (name, ...args) => {
    try {
      options[name]?.(...args);
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  };

  let token = options.token;
  let timer;
  // Each start of the heartbeat loop (the first, a takeover, a displaced notice) gets a
  // new generation; an answer that arrives for an older one schedules nothing, so there
  // is never more than one loop.
  let generation = 0;
  let notices;
  let reopen;
  let running = true;
  let lastAccepted = Date.now();
  let resolveStopped;
  let stopped;
  const armStopped = () => {
    stopped = new Promise((resolve) => (resolveStopped = resolve));
  };
  armStopped();

  function finish(reason) {
    if (!running) return;
    running = false;
    clearTimeout(timer);
    clearTimeout(reopen);
    notices?.close();
    notices = undefined;
    if (letGo) page.removeEventListener("pagehide", onPageHide);
    resolveStopped(reason);
  }

  // The page is going away (closed, reloaded, navigated from): free the slot now, not a
  // cycle and its tolerance later. `keepalive` lets the request outlive the page.
  function onPageHide() {
    stop();
  }

  async function stop() {
    const wasRunning = running;
    finish(StopReason.STOPPED);
    if (!wasRunning) return;
    try {
      await post("/heartbeat/stop", {}, { keepalive: true });
    } catch (cause) {
      call("onError", new HeartbeatError("network", "stop could not be sent", { cause }));
    }
  }

  function progress() {
    const value = options.progress?.();
    return typeof value === "number" && Number.isFinite(value) && value >= 0 ? value : undefined;
  }

  function post(path, fields, extra = {}) {
    const body = { heartbeat_token: token, ...fields };
    const at = progress();
    if (at !== undefined) body.progress = at;
    return fetchImpl(`${url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      ...extra,
    });
  }

  function followNotices() {
    if (!follow || notices || !running) return;
    const source = new EventSourceImpl(
      `${url}/heartbeat/events?heartbeat_token=${encodeURIComponent(token)}`,
    );
    notices = source;
    source.addEventListener("ended", (event) => {
      let notice = {};
      try {
        notice = JSON.parse(event.data);
      } catch {
        // An unreadable notice still ends the session.
      }
      if (!running) return;
      if (notice.reason === "displaced") {
        // Refused under the limits: a heartbeat now gets the 412 that says which limit
        // and which devices keep playing (onRefused), instead of a bare notice.
        drop(source);
        clearTimeout(timer);
        generation += 1;
        beat(0);
        return;
      }
      finish(StopReason.ENDED);
      call("onEnded", notice);
    });
    // The stream closes when the session stops, expires or reaches its lifetime, or the
    // network fails: one that was open is opened again soon with the current token. One
    // that never opened (a server without it, such as the Node server) is tried again at
    // the next accepted heartbeat; heartbeats keep telling in the meantime.
    let opened = false;
    source.addEventListener("open", () => {
      opened = true;
    });
    source.addEventListener("error", () => {
      drop(source);
      if (opened && running) {
        clearTimeout(reopen);
        reopen = setTimeout(followNotices, REOPEN_NOTICES_MS);
      }
    });
  }

  /** Closes a notice stream (a no-op when it is closed) and forgets it if it is current. */
  function drop(source) {
    source.close();
    if (notices === source) notices = undefined;
  }

  // Reads an answer that admits the session (a heartbeat's or a takeover's 200).
  async function accepted(response) {
    const body = await bodyOf(response);
    if (typeof body.heartbeat_token !== "string") {
      throw new HeartbeatError("protocol", "a 200 answer without heartbeat_token", {
        status: 200,
      });
    }
    token = body.heartbeat_token;
    lastAccepted = Date.now();
    call("onAccepted", token);
    // Report-only limits (SPEC §3.8): accepted, but enforced limits would refuse it.
    const would = body.would_refuse;
    if (would !== null && typeof would === "object" && typeof would.reason === "string") {
      call("onWouldRefuse", {
        reason: would.reason,
        limit: typeof would.limit === "number" ? would.limit : null,
      });
    }
    followNotices();
  }

  // Handles a final answer (412, 406); returns true when the player stopped.
  async function refused(response) {
    if (response.status === 412) {
      const body = await bodyOf(response);
      finish(StopReason.REFUSED);
      call("onRefused", {
        reason: typeof body.reason === "string" ? body.reason : null,
        limit: typeof body.limit === "number" ? body.limit : null,
        sessions: Array.isArray(body.sessions) ? body.sessions : [],
        message: typeof body.error === "string" ? body.error : "",
      });
      return true;
    }
    if (response.status === 406) {
      const body = await bodyOf(response);
      finish(StopReason.INVALID_TOKEN);
      const field = typeof body.field === "string" ? body.field : null;
      call(
        "onError",
        new HeartbeatError(
          "invalid_token",
          field === null
            ? "the server cannot use this token (406)"
            : `the server cannot use this token (406): ${body.reason} \`${field}\``,
          {
            status: 406,
            fatal: true,
            reason: typeof body.reason === "string" ? body.reason : null,
            field,
          },
        ),
      );
      return true;
    }
    return false;
  }

  async function beat(attempt, mine = generation) {
    if (!running || mine !== generation) return;
    let wait = delayMs;
    try {
      const response = await post("/heartbeat", {});
      if (!running || mine !== generation) return;
      if (response.ok) {
        await accepted(response);
        attempt = 0;
      } else if (await refused(response)) {
        return;
      } else {
        // Only 412 and 406 stop a player (SPEC §5): any other answer is retried, with
        // backoff or after Retry-After, until the session's tolerance has passed.
        call(
          "onError",
          new HeartbeatError("http", `heartbeat answered ${response.status}`, {
            status: response.status,
          }),
        );
        wait = retryAfterMs(response) ?? backoff(attempt);
        attempt += 1;
      }
    } catch (cause) {
      if (!running || mine !== generation) return;
      call(
        "onError",
        new HeartbeatError("network", "the heartbeat could not be sent", { cause }),
      );
      wait = backoff(attempt);
      attempt += 1;
    }
    if (attempt > 0 && Date.now() + wait - lastAccepted > cycleMs + toleranceMs) {
      // The session expires on the server before the next try could arrive.
      finish(StopReason.UNREACHABLE);
      call(
        "onError",
        new HeartbeatError("unreachable", "no heartbeat was accepted within the tolerance", {
          fatal: true,
        }),
      );
      return;
    }
    timer = setTimeout(() => beat(attempt, mine), wait);
  }

  function backoff(attempt) {
    const base = Math.min(MAX_BACKOFF_MS, 250 * 2 ** attempt);
    return base / 2 + Math.random() * (base / 2);
  }

  if (letGo) page.addEventListener("pagehide", onPageHide);
  queueMicrotask(() => beat(0));

  return {
    get token() {
      return token;
    },
    get running() {
      return running;
    },
    /** Resolves with a StopReason when the player stops (again after a takeover). */
    get stopped() {
      return stopped;
    },
    /** Ends the session now and frees its slot (`POST /heartbeat/stop`). */
    stop,
    /**
     * "Watch here instead": ends `sessionId` and plays here, heartbeating again with the
     * new token. Resolves true when taken over, false when that session is no longer
     * active (heartbeat again, or start a new playback).
     */
    async takeOver(sessionId) {
      const response = await post("/heartbeat/takeover", { session_id: sessionId });
      if (response.status === 404) return false;
      if (!response.ok) {
        const body = await bodyOf(response);
        throw new HeartbeatError("http", body.error ?? `takeover answered ${response.status}`, {
          status: response.status,
        });
      }
      clearTimeout(timer);
      generation += 1;
      if (!running) {
        // A refused player that takes over plays again.
        running = true;
        armStopped();
        if (letGo) page.addEventListener("pagehide", onPageHide);
      }
      await accepted(response);
      const mine = generation;
      timer = setTimeout(() => beat(0, mine), delayMs);
      return true;
    },
  };
}
