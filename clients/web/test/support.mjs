// What the test files share: the playback every test plays, and a proxy in front of the
// real server that can answer in its place or rewrite its answers.
import { createServer } from "node:http";

import { mintBackendToken } from "../../backend/mint.mjs";

/** The heartbeat data of a test playback: a one-stream plan where the device playing
 * first keeps playing (`MOST_RECENT`), a one-second cycle, counted from its first
 * heartbeat on. */
export function playback(user, device, extra = {}) {
  return {
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
  };
}

/** The backend's first token (`b1.`) of a test playback. */
export function firstToken(sharedKey, user, device, extra = {}) {
  return mintBackendToken(sharedKey, playback(user, device, extra));
}

/**
 * A proxy on a free loopback port in front of `target`. `before(request)` may answer in
 * the server's place (return `{ status, headers, body }`) or let the request through
 * (return nothing, possibly after a delay); `after(request, status, body)` may rewrite
 * the server's answer body. Resolves with `{ url, close }`.
 */
export async function startProxy(target, { before, after } = {}) {
  const proxy = createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const own = await before?.(request);
    if (own) {
      response.writeHead(own.status, { "content-type": "application/json", ...own.headers });
      response.end(own.body);
      return;
    }
    const answer = await fetch(`${target}${request.url}`, {
      method: request.method,
      headers: { "content-type": request.headers["content-type"] ?? "application/json" },
      body: Buffer.concat(chunks),
    });
    let body = Buffer.from(await answer.arrayBuffer());
    if (after) body = after(request, answer.status, body);
    response.writeHead(answer.status, { "content-type": "application/json" });
    response.end(body);
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${proxy.address().port}`,
    close: () => proxy.close(),
  };
}

/**
 * A `before` for {@link startProxy} that answers the first request with `answer`
 * (`{ status, headers, body }`) in the server's place and lets every later one through.
 */
export function answerFirst(answer) {
  let left = 1;
  return () => (left-- > 0 ? answer : undefined);
}
