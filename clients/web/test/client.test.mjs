// The web player client against a real heartbeat-server (node --test). The server's URL
// and shared key come from HEARTBEAT_URL and SHARED_KEY: heartbeat-http/tests/web_client.rs
// starts the release-built server and runs these tests against it.
import assert from "node:assert/strict";
import { createCipheriv, pbkdf2Sync, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { test } from "node:test";

import { RefusalReason, StopReason, startHeartbeat } from "../src/heartbeat.js";
import { answerFirst, firstToken as firstTokenFor, playback, startProxy } from "./support.mjs";

const url = process.env.HEARTBEAT_URL;
const sharedKey = process.env.SHARED_KEY;
if (!url || !sharedKey) {
  throw new Error(
    "set HEARTBEAT_URL and SHARED_KEY to a running heartbeat-server " +
      "(cargo test -p heartbeat-http --test web_client does)",
  );
}

let nextUser = Date.now() % 1_000_000_000;
/** A fresh user's first token (test/support.mjs: a one-stream plan, a one-second cycle). */
const firstToken = (user, device, extra) => firstTokenFor(sharedKey, user, device, extra);

/** Resolves with the first value `register` hands its callback, or rejects after `ms`. */
function next(register, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nothing within ${ms} ms`)), ms);
    register((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** Starts a player with callbacks that collect what happens. */
function player(token, more = {}) {
  const seen = { accepted: [], refused: [], ended: [], errors: [] };
  const waiters = { accepted: [], refused: [], ended: [], errors: [] };
  const push = (kind) => (value) => {
    seen[kind].push(value);
    for (const wake of waiters[kind].splice(0)) wake(value);
  };
  const handle = startHeartbeat({
    url,
    token,
    cycle: 1,
    upperTolerance: 2,
    progress: () => 42,
    EventSource: null,
    onAccepted: push("accepted"),
    onRefused: push("refused"),
    onEnded: push("ended"),
    onError: push("errors"),
    ...more,
  });
  const when = (kind, ms) => next((wake) => waiters[kind].push(wake), ms);
  return { handle, seen, when };
}

test("heartbeats are accepted every cycle and the token rotates", async () => {
  const tv = player(firstToken(++nextUser, "Living-room TV"));
  const first = await tv.when("accepted");
  const second = await tv.when("accepted", 3000);
  assert.match(first, /^v2\./);
  assert.notEqual(first, second);
  assert.equal(tv.handle.token, second);
  assert.ok(tv.handle.running);
  await tv.handle.stop();
  assert.equal(await tv.handle.stopped, StopReason.STOPPED);
});

test("a second device is refused with the reason, the limit and the device playing; it takes over; stop frees the slot", async () => {
  const user = ++nextUser;
  const tv = player(firstToken(user, "Living-room TV"));
  await tv.when("accepted");
  await tv.when("accepted", 3000); // counted from its second heartbeat on
  const phone = player(firstToken(user, "Phone"));
  await phone.when("accepted"); // a new session's first heartbeat is answered before it counts
  const refusal = await phone.when("refused", 4000);
  assert.equal(refusal.reason, "over_limit");
  assert.equal(refusal.limit, 1);
  assert.deepEqual(
    refusal.sessions.map((session) => session.device),
    ["Living-room TV"],
  );
  assert.equal(await phone.handle.stopped, StopReason.REFUSED);
  assert.equal(phone.handle.running, false);

  // "Watch here instead": the phone plays again, the TV is told at its next heartbeat
  // (no EventSource here: the browser test covers the pushed notice).
  assert.equal(await phone.handle.takeOver(refusal.sessions[0].session_id), true);
  assert.ok(phone.handle.running);
  const told = await tv.when("refused", 4000);
  assert.equal(told.reason, "taken_over");
  assert.equal(await tv.handle.stopped, StopReason.REFUSED);
  await phone.when("accepted", 3000);

  // Stop frees the slot: a third device plays past its counted heartbeats.
  await phone.handle.stop();
  const tablet = player(firstToken(user, "Tablet"));
  await tablet.when("accepted");
  await tablet.when("accepted", 3000);
  await tablet.when("accepted", 3000);
  assert.equal(tablet.seen.refused.length, 0);
  await tablet.handle.stop();
});

test("report-only limits (enforce: false): the device over the limit plays on and hears onWouldRefuse", async () => {
  const user = ++nextUser;
  const reportOnly = { enforce: false };
  const tv = player(firstToken(user, "Living-room TV", reportOnly));
  await tv.when("accepted");
  await tv.when("accepted", 3000); // counted from its second heartbeat on
  const would = [];
  const phone = player(firstToken(user, "Phone", reportOnly), {
    onWouldRefuse: (value) => would.push(value),
  });
  await phone.when("accepted");
  for (let beat = 0; beat < 3; beat++) await phone.when("accepted", 3000);
  assert.equal(phone.seen.refused.length, 0);
  assert.ok(phone.handle.running);
  assert.ok(would.length >= 2, `reported ${would.length} times`);
  assert.deepEqual(would[0], { reason: "over_limit", limit: 1 });
  // Enforced, the phone (the newer device: MOST_RECENT) would have stopped; the TV plays on.
  assert.equal(tv.seen.refused.length, 0);
  await phone.handle.stop();
  await tv.handle.stop();
});

test("a notice stream that was open and failed is opened again within a second with the current token; one that never opened waits for the next heartbeat", async () => {
  const sources = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.listeners = {};
      this.closed = false;
      sources.push(this);
    }
    addEventListener(kind, listener) {
      (this.listeners[kind] ??= []).push(listener);
    }
    emit(kind) {
      for (const listener of this.listeners[kind] ?? []) listener({});
    }
    close() {
      this.closed = true;
    }
  }
  const tokenOf = (source) => new URL(source.url).searchParams.get("heartbeat_token");
  const tv = player(firstToken(++nextUser, "TV"), { EventSource: FakeEventSource, cycle: 4 });
  await tv.when("accepted");
  assert.equal(sources.length, 1);
  // Open, then failed (a network blip): opened again soon, not at the next heartbeat (4 s).
  sources[0].emit("open");
  sources[0].emit("error");
  assert.ok(sources[0].closed);
  const started = Date.now();
  while (sources.length < 2 && Date.now() - started < 3000) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.equal(sources.length, 2, "reopened");
  assert.ok(Date.now() - started < 2000, `reopened after ${Date.now() - started} ms`);
  assert.equal(tokenOf(sources[1]), tv.handle.token, "with the current token");
  // Failed before it ever opened (a server without notices): tried again by the next
  // accepted heartbeat, with that heartbeat's token (not on its own, with the older one).
  sources[1].emit("error");
  const next = await tv.when("accepted", 8000);
  assert.equal(sources.length, 3);
  assert.equal(tokenOf(sources[2]), next);
  await tv.handle.stop();
});

test("a spent token replayed by another player is refused as replayed; the first plays on", async () => {
  const tv = player(firstToken(++nextUser, "Living-room TV"));
  const spent = await tv.when("accepted");
  // Two heartbeats later `spent` is behind the playback (one later, it would still be the
  // retry of a lost answer, which continues the session once).
  await tv.when("accepted", 3000);
  await tv.when("accepted", 3000);
  const copy = player(spent);
  const refusal = await copy.when("refused", 4000);
  assert.equal(refusal.reason, RefusalReason.REPLAYED);
  assert.equal(refusal.limit, null);
  assert.equal(await copy.handle.stopped, StopReason.REFUSED);
  await tv.when("accepted", 3000);
  assert.equal(tv.seen.refused.length, 0);
  await tv.handle.stop();
});

test("taking over a session that is no longer active resolves false", async () => {
  const user = ++nextUser;
  const tv = player(firstToken(user, "Living-room TV"));
  await tv.when("accepted");
  assert.equal(await tv.handle.takeOver("no-such-session"), false);
  await tv.handle.stop();
});

test("an invalid token stops the player with a fatal invalid_token error", async () => {
  const broken = player("v2.not-a-token");
  const error = await broken.when("errors");
  assert.equal(error.kind, "invalid_token");
  assert.equal(error.status, 406);
  assert.equal(error.fatal, true);
  assert.equal(await broken.handle.stopped, StopReason.INVALID_TOKEN);
});

test("503 with Retry-After is retried after it, and the player keeps going", async () => {
  // A proxy in front of the real server that answers the first heartbeat 503.
  const proxy = await startProxy(url, {
    before: answerFirst({
      status: 503,
      headers: { "retry-after": "1" },
      body: '{"error":"Storage is unavailable; retry shortly."}',
    }),
  });
  try {
    const started = Date.now();
    const tv = player(firstToken(++nextUser, "Living-room TV"), { url: proxy.url });
    const error = await tv.when("errors");
    assert.equal(error.kind, "http");
    assert.equal(error.status, 503);
    assert.equal(error.fatal, false);
    await tv.when("accepted", 4000);
    assert.ok(Date.now() - started >= 900, "retried only after Retry-After");
    await tv.handle.stop();
  } finally {
    proxy.close();
  }
});

test("an unreachable server is given up after the tolerance", async () => {
  const closed = createServer();
  await new Promise((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const { port } = closed.address();
  await new Promise((resolve) => closed.close(resolve));
  const lost = player(firstToken(++nextUser, "Phone"), { url: `http://127.0.0.1:${port}` });
  assert.equal(await lost.handle.stopped, StopReason.UNREACHABLE);
  const kinds = lost.seen.errors.map((error) => error.kind);
  assert.ok(kinds.includes("network"), kinds.join());
  assert.equal(kinds.at(-1), "unreachable");
});

/** A legacy token as a Node-era backend makes it (crypto-js, heartbeat-core's
 * token/legacy.rs): hex(salt, 16 B) + hex(iv, 16 B) + base64(AES-256-CBC(json)) with the
 * key PBKDF2-HMAC-SHA1(SHARED_KEY, salt, 3 iterations, 32 B). */
function legacyToken(user, device) {
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const key = pbkdf2Sync(sharedKey, salt, 3, 32, "sha1");
  const cipher = createCipheriv("aes-256-cbc", key, iv);
  const json = JSON.stringify(playback(user, device));
  const body = Buffer.concat([cipher.update(json), cipher.final()]);
  return salt.toString("hex") + iv.toString("hex") + body.toString("base64");
}

test("Node-era legacy tokens play and are refused without the device list: the client degrades", async () => {
  const user = ++nextUser;
  const tv = player(legacyToken(user, "Old TV"));
  await tv.when("accepted");
  await tv.when("accepted", 3000);
  const phone = player(legacyToken(user, "Old phone"));
  const refusal = await phone.when("refused", 5000);
  assert.equal(refusal.reason, "over_limit");
  assert.deepEqual(refusal.sessions, [], "a forgeable token is never shown the devices");
  assert.equal(await phone.handle.stopped, StopReason.REFUSED);
  await tv.handle.stop();
});

test("a refusal without a reason (the Node server's 412) reaches onRefused with nulls", async () => {
  // A proxy in front of the real server that answers as the Node server does: the 412's
  // body is only its error text.
  const proxy = await startProxy(url, {
    after: (_request, status, body) =>
      status === 412 ? Buffer.from(JSON.stringify({ error: JSON.parse(body).error })) : body,
  });
  const nodeLike = proxy.url;
  try {
    const user = ++nextUser;
    const tv = player(legacyToken(user, "Old TV"), { url: nodeLike });
    await tv.when("accepted");
    await tv.when("accepted", 3000);
    const phone = player(legacyToken(user, "Old phone"), { url: nodeLike });
    const refusal = await phone.when("refused", 5000);
    assert.deepEqual(
      { reason: refusal.reason, limit: refusal.limit, sessions: refusal.sessions },
      { reason: null, limit: null, sessions: [] },
    );
    assert.match(refusal.message, /exceeded the maximum allowed number of devices/);
    await tv.handle.stop();
  } finally {
    proxy.close();
  }
});

test("a 400 is retried like a 5xx, not a reason to stop (only 412 and 406 stop)", async () => {
  const proxy = await startProxy(url, {
    before: answerFirst({ status: 400, body: '{"error":"The body is not valid JSON."}' }),
  });
  try {
    const tv = player(firstToken(++nextUser, "Living-room TV"), { url: proxy.url });
    const error = await tv.when("errors");
    assert.deepEqual([error.kind, error.status, error.fatal], ["http", 400, false]);
    await tv.when("accepted", 4000);
    await tv.handle.stop();
  } finally {
    proxy.close();
  }
});

test("a takeover while a heartbeat is in flight leaves one heartbeat loop, not two", async () => {
  // A proxy that holds every heartbeat half a second and counts them.
  let heartbeats = 0;
  let arrived;
  const proxy = await startProxy(url, {
    before: async (request) => {
      if (request.url !== "/heartbeat") return undefined;
      heartbeats += 1;
      arrived?.();
      await new Promise((resolve) => setTimeout(resolve, 500));
      return undefined;
    },
  });
  const through = proxy.url;
  try {
    const user = ++nextUser;
    const two = { session_limit: 2 };
    const tv = player(firstToken(user, "Living-room TV", two));
    await tv.when("accepted");
    const phone = player(firstToken(user, "Phone", two), { url: through });
    await phone.when("accepted", 4000);
    // The TV's session id, from the 412 a third device on a one-stream plan gets at its
    // second heartbeat.
    const tvSession = await (async () => {
      const beat = async (token) => {
        const answer = await fetch(`${url}/heartbeat`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ heartbeat_token: token }),
        });
        return answer.json();
      };
      const first = await beat(firstToken(user, "Probe"));
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const refused = await beat(first.heartbeat_token);
      return refused.sessions?.find((session) => session.device === "Living-room TV")
        ?.session_id;
    })();
    assert.ok(tvSession, "the TV's session is listed");
    // Wait until the phone's next heartbeat is held by the proxy, then take over.
    await new Promise((resolve) => (arrived = resolve));
    arrived = undefined;
    assert.equal(await phone.handle.takeOver(tvSession), true);
    const before = heartbeats;
    await new Promise((resolve) => setTimeout(resolve, 6000));
    const sent = heartbeats - before;
    // One loop: a heartbeat every 1.25 s plus the proxy's 0.5 s, at most 4 in 6 s (two
    // loops send 6 or more).
    assert.ok(sent <= 4, `${sent} heartbeats in 6 s: more than one loop`);
    await phone.handle.stop();
    await tv.handle.stop();
  } finally {
    proxy.close();
  }
});

test("the player lets go when the page goes away (pagehide): another device plays at once; the switch turns it off", async () => {
  const user = ++nextUser;
  const page = new EventTarget();
  const kept = new EventTarget();
  const players = [];
  const play = (...args) => {
    const started = player(...args);
    players.push(started);
    return started;
  };
  try {
    const tv = play(firstToken(user, "Living-room TV"), { page });
    await tv.when("accepted");
    await tv.when("accepted", 3000);
    page.dispatchEvent(new Event("pagehide"));
    const stopped = await Promise.race([
      tv.handle.stopped,
      new Promise((resolve) => setTimeout(() => resolve("still running 2 s after pagehide"), 2000)),
    ]);
    assert.equal(stopped, StopReason.STOPPED);
    // The stop is a keepalive request: the next device is admitted at its first counted
    // heartbeat, long before the TV's session would have expired (cycle + tolerance, 3 s).
    const phone = play(firstToken(user, "Phone"));
    await phone.when("accepted");
    await phone.when("accepted", 3000);
    assert.deepEqual(phone.seen.refused, []);

    // Off: the page going away leaves the player (and its slot) alone.
    const radio = play(firstToken(++nextUser, "Radio"), { page: kept, releaseOnPageHide: false });
    await radio.when("accepted");
    kept.dispatchEvent(new Event("pagehide"));
    await radio.when("accepted", 3000);
    assert.equal(radio.handle.running, true);
  } finally {
    // A failed check must not leave a player beating (the test process would not end).
    await Promise.all(players.map(({ handle }) => handle.stop()));
  }
});
