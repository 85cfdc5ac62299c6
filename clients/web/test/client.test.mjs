// The web player client against a real heartbeat-server (node --test). The server's URL
// and shared key come from HEARTBEAT_URL and SHARED_KEY: heartbeat-http/tests/web_client.rs
// starts the release-built server and runs these tests against it.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";

import { mintBackendToken } from "../../backend/mint.mjs";
import { StopReason, startHeartbeat } from "../src/heartbeat.js";

const url = process.env.HEARTBEAT_URL;
const sharedKey = process.env.SHARED_KEY;
if (!url || !sharedKey) {
  throw new Error(
    "set HEARTBEAT_URL and SHARED_KEY to a running heartbeat-server " +
      "(cargo test -p heartbeat-http --test web_client does)",
  );
}

let nextUser = Date.now() % 1_000_000_000;
/** A fresh user's first token: a one-stream plan where the device playing first keeps
 * playing (`MOST_RECENT`), a one-second cycle. */
function firstToken(user, device, extra = {}) {
  return mintBackendToken(sharedKey, {
    user_id: user,
    asset_id: 14,
    heartbeat_cycle: 1,
    cycle_upper_tolerance: 2,
    timestamp: new Date().toISOString(),
    session_limit: 1,
    checking_threshold: 1,
    reject_strategy: "MOST_RECENT",
    device,
    ...extra,
  });
}

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
  let failures = 1;
  const proxy = createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    if (failures > 0) {
      failures -= 1;
      response.writeHead(503, { "retry-after": "1", "content-type": "application/json" });
      response.end('{"error":"Storage is unavailable; retry shortly."}');
      return;
    }
    const answer = await fetch(`${url}${request.url}`, {
      method: request.method,
      headers: { "content-type": request.headers["content-type"] ?? "application/json" },
      body: Buffer.concat(chunks),
    });
    response.writeHead(answer.status, { "content-type": "application/json" });
    response.end(Buffer.from(await answer.arrayBuffer()));
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const { port } = proxy.address();
  try {
    const started = Date.now();
    const tv = player(firstToken(++nextUser, "Living-room TV"), {
      url: `http://127.0.0.1:${port}`,
    });
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
