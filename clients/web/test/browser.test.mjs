// The web client in a real browser (headless Chromium through puppeteer-core), on another
// origin than the server (CORS_ORIGINS): two tabs of one user on a one-stream plan.
// HEARTBEAT_URL, SHARED_KEY, PAGE_PORT (the origin the server allows) and CHROMIUM come
// from heartbeat-http/tests/web_client.rs.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { startHeartbeat } from "../src/heartbeat.js";
import { firstToken } from "./support.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { HEARTBEAT_URL: server, SHARED_KEY: sharedKey, PAGE_PORT: pagePort } = process.env;
const chromium = process.env.CHROMIUM ?? "/usr/bin/chromium";
if (!server || !sharedKey || !pagePort) {
  throw new Error("set HEARTBEAT_URL, SHARED_KEY and PAGE_PORT (web_client.rs does)");
}

/** GONE_GRACE_SECS of the server web_client.rs starts, in milliseconds. */
const GRACE_MS = 2000;

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".webm": "video/webm" };

/** Serves clients/web (the page and the module) on the page origin. */
async function pageServer() {
  const files = createServer(async (request, response) => {
    let path = normalize(new URL(request.url, "http://x").pathname).replace(/^\/+/, "");
    if (path.endsWith("/") || path === "") path += "index.html";
    try {
      const body = await readFile(join(root, path));
      response.writeHead(200, { "content-type": TYPES[extname(path)] ?? "text/plain" });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => files.listen(Number(pagePort), "127.0.0.1", resolve));
  return files;
}

/** The first token of a test playback (test/support.mjs). */
const token = (user, device) => firstToken(sharedKey, user, device);

/** Waits until the page has logged `count` events of `kind`; returns them. */
async function events(page, kind, count = 1, timeout = 6000) {
  try {
    await page.waitForFunction(
      (kind, count) => window.events.filter((event) => event.kind === kind).length >= count,
      { timeout, polling: 50 },
      kind,
      count,
    );
  } catch (error) {
    const seen = await page.evaluate(() => JSON.stringify(window.events));
    throw new Error(`no ${count} ${kind} event(s) within ${timeout} ms; the page saw ${seen}`, {
      cause: error,
    });
  }
  return page.evaluate((kind) => window.events.filter((event) => event.kind === kind), kind);
}

/** Runs `run(browser)` with headless Chromium (launched with `args` besides the usual
 * ones) and the page server up, and closes both whatever happens. */
async function withBrowser(run, args = []) {
  let puppeteer;
  try {
    puppeteer = await import("puppeteer-core");
  } catch {
    throw new Error("puppeteer-core is missing: run `npm ci --prefix clients/web` (scripts/test does)");
  }
  const files = await pageServer();
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", ...args],
  });
  try {
    await run(browser);
  } finally {
    await browser.close();
    files.close();
  }
}

test("two tabs: the second is refused with the first listed, takes over, the first is told at once, stop frees the slot", async () => {
  await withBrowser(async (browser) => {
    const user = 900_000_000 + (Date.now() % 1_000_000);
    const open = async (device) => {
      const page = await browser.newPage();
      page.on("pageerror", (error) => console.error(`${device}: ${error.message}`));
      const query = new URLSearchParams({ server, token: token(user, device) });
      await page.goto(`http://127.0.0.1:${pagePort}/test/browser/player.html?${query}`);
      return page;
    };
    const first = await open("Tab one");
    await events(first, "accepted", 2); // counted from its second heartbeat

    const second = await open("Tab two");
    const [refused] = await events(second, "refused");
    assert.equal(refused.value.reason, "over_limit");
    assert.equal(refused.value.limit, 1);
    assert.deepEqual(
      refused.value.sessions.map((session) => session.device),
      ["Tab one"],
    );

    // "Watch here instead": the first tab's EventSource tells it within a second.
    const sessionId = refused.value.sessions[0].session_id;
    const before = Date.now();
    const tookOver = await second.evaluate((id) => window.player.takeOver(id), sessionId);
    assert.equal(tookOver, true);
    const [ended] = await events(first, "ended", 1, 3000);
    assert.equal(ended.value.reason, "taken_over");
    assert.equal(ended.value.by.device, "Tab two");
    // The pages and this test share the machine's clock.
    const waited = ended.at - before;
    assert.ok(waited <= 1000, `the first tab was told ${waited} ms after the takeover began`);
    assert.equal(await first.evaluate(() => window.player.running), false);

    // Stop frees the slot: a third device plays on past its counted heartbeats.
    await second.evaluate(() => window.player.stop());
    const seen = [];
    const third = startHeartbeat({
      url: server,
      token: token(user, "Tablet"),
      cycle: 1,
      upperTolerance: 2,
      EventSource: null,
      onAccepted: (value) => seen.push(["accepted", value]),
      onRefused: (value) => seen.push(["refused", value]),
    });
    await new Promise((resolve) => setTimeout(resolve, 2600));
    await third.stop();
    assert.ok(seen.filter(([kind]) => kind === "accepted").length >= 2, JSON.stringify(seen));
    assert.equal(seen.filter(([kind]) => kind === "refused").length, 0, JSON.stringify(seen));
  });
});

test("the demo page shows the devices playing, takes over with its button, and shows who took over", async () => {
  const shots = process.env.SCREENSHOTS_DIR;
  await withBrowser(async (browser) => {
    const user = 910_000_000 + (Date.now() % 1_000_000);
    const open = async (device) => {
      const page = await browser.newPage();
      await page.setViewport({ width: 460, height: 420 });
      const query = new URLSearchParams({ server, token: token(user, device), cycle: 1, tolerance: 2 });
      await page.goto(`http://127.0.0.1:${pagePort}/demo/?${query}`);
      return page;
    };
    const text = (page, id) => page.$eval(`#${id}`, (element) => element.textContent);
    const tv = await open("Living-room TV");
    await tv.waitForFunction(() => document.getElementById("status").textContent === "Playing", {
      timeout: 6000,
    });
    await tv.waitForFunction(() => document.getElementById("video").currentTime > 0, {
      timeout: 6000,
    });
    if (shots) await tv.screenshot({ path: `${shots}/web-player-playing.png` });

    const phone = await open("Phone");
    await phone.waitForSelector("#refused:not([hidden]) li button", { timeout: 8000 });
    assert.equal(await text(phone, "refused-text"), "Your plan plays 1 stream at once.");
    assert.equal(await text(phone, "playing"), "Playing on Living-room TVWatch here instead");
    assert.equal(await phone.$eval("#video", (video) => video.paused), true);
    if (shots) await phone.screenshot({ path: `${shots}/web-player-refused.png` });

    await phone.click("#refused li button");
    await tv.waitForSelector("#ended:not([hidden])", { timeout: 3000 });
    assert.equal(await text(tv, "ended"), "Now playing on Phone.");
    assert.equal(await tv.$eval("#video", (video) => video.paused), true);
    await phone.waitForFunction(() => document.getElementById("status").textContent === "Playing", {
      timeout: 4000,
    });
    if (shots) await tv.screenshot({ path: `${shots}/web-player-taken-over.png` });
    await phone.click("#stop");
    await phone.waitForFunction(
      () => document.getElementById("status").textContent === "Stopped by you",
      { timeout: 3000 },
    );
  }, ["--autoplay-policy=no-user-gesture-required"]);
});

/** One heartbeat of `token` from this process. */
const post = (token) =>
  fetch(`${server}/heartbeat`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ heartbeat_token: token }),
  });

/** Another device of the user, from this process: its first heartbeat (always answered:
 * a playback's first heartbeat is answered before it counts), then `counted()` sends the
 * heartbeats that count, answering their status. */
async function secondDevice(backendToken) {
  const first = await post(backendToken);
  assert.equal(first.status, 200, "a playback's first heartbeat is answered");
  let current = (await first.json()).heartbeat_token;
  return {
    async counted() {
      const response = await post(current);
      if (response.status === 200) current = (await response.json()).heartbeat_token;
      return response.status;
    },
  };
}

/** Sends `device`'s counted heartbeat every 100 ms until one is answered 200: how long
 * that took (at most a little past `limitMs`). */
async function admittedAfter(device, limitMs) {
  const start = Date.now();
  for (;;) {
    const status = await device.counted();
    if (status === 200) return Date.now() - start;
    assert.equal(status, 412, `a device at the limit is refused, not ${status}`);
    if (Date.now() - start > limitMs) return Date.now() - start;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test("a closed tab frees its slot at once (pagehide, keepalive, cross-origin); a reload with a fresh token plays on", async () => {
  await withBrowser(async (browser) => {
    const user = 920_000_000 + (Date.now() % 1_000_000);
    const open = async (device) => {
      const page = await browser.newPage();
      const query = new URLSearchParams({ server, token: token(user, device) });
      await page.goto(`http://127.0.0.1:${pagePort}/test/browser/player.html?${query}`);
      return page;
    };
    // The tab is closed: the phone at the limit (one stream, the device playing first
    // keeps it) is admitted within a second, not after the tab's cycle and tolerance (3 s).
    const tab = await open("Tab");
    await events(tab, "accepted", 2);
    const phone = await secondDevice(token(user, "Phone"));
    assert.equal(await phone.counted(), 412, "the tab holds the one slot");
    await tab.close();
    const waited = await admittedAfter(phone, 5000);
    assert.ok(waited <= 1000, `the phone was admitted ${waited} ms after the tab closed`);

    // A reload: the page that goes away lets go, and the page that comes back with a
    // fresh backend token plays (with a stuck slot it would be refused as a second device).
    const second = 930_000_000 + (Date.now() % 1_000_000);
    const reloading = await browser.newPage();
    const at = (device) =>
      `http://127.0.0.1:${pagePort}/test/browser/player.html?${new URLSearchParams({
        server,
        token: firstToken(sharedKey, second, device),
      })}`;
    await reloading.goto(at("Laptop"));
    await events(reloading, "accepted", 2);
    await reloading.goto(at("Laptop"));
    const accepted = await events(reloading, "accepted", 3);
    assert.equal(accepted.length >= 3, true);
    const refused = await reloading.evaluate(() => window.events.filter((e) => e.kind === "refused"));
    assert.deepEqual(refused, []);
  });
});

/** Resolves once the server counts an open notice stream (its /metrics). */
async function aStreamIsOpen(limitMs = 6000) {
  const start = Date.now();
  while (Date.now() - start < limitMs) {
    const metrics = await (await fetch(`${server}/metrics`)).text();
    const open = Number(/^heartbeat_sse_connections (\d+)/m.exec(metrics)?.[1] ?? 0);
    if (open >= 1) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no notice stream opened within ${limitMs} ms`);
}

test("a crashed tab (renderer killed, no pagehide) frees its slot within the grace plus a second", async () => {
  await withBrowser(async (browser) => {
    // A 10 s cycle and 20 s tolerance: without the grace the slot would stay 30 s.
    const user = 940_000_000 + (Date.now() % 1_000_000);
    const long = { heartbeat_cycle: 10, cycle_upper_tolerance: 20 };
    const tab = await browser.newPage();
    const query = new URLSearchParams({ server, token: firstToken(sharedKey, user, "Tab", long) });
    await tab.goto(`http://127.0.0.1:${pagePort}/test/browser/player.html?${query}`);
    await events(tab, "accepted", 1);
    await aStreamIsOpen();
    const phone = await secondDevice(firstToken(sharedKey, user, "Phone", long));
    assert.equal(await phone.counted(), 412, "the tab holds the one slot");

    // Kill the tab's renderer process: no pagehide, no stop; its stream's connection closes.
    const cdp = await browser.target().createCDPSession();
    const { processInfo } = await cdp.send("SystemInfo.getProcessInfo");
    const renderers = processInfo.filter((info) => info.type === "renderer");
    assert.ok(renderers.length >= 1, JSON.stringify(processInfo));
    for (const renderer of renderers) process.kill(renderer.id, "SIGKILL");
    const killed = Date.now();
    assert.equal(await phone.counted(), 412, "the slot is held while the grace runs");
    await admittedAfter(phone, GRACE_MS + 5000);
    const since = Date.now() - killed;
    assert.ok(since <= GRACE_MS + 1000, `the phone was admitted ${since} ms after the crash`);
  });
});
