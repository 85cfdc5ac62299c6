// Mints a heartbeat `b1.` backend token with Node's standard library alone (node:crypto).
// Format: docs/backends.md. Node 16+.
//
//   import { mintBackendToken } from "./mint.mjs";
//   const token = mintBackendToken(process.env.SHARED_KEY, {
//     user_id: 13, asset_id: 14, heartbeat_cycle: 30, cycle_upper_tolerance: 10,
//     timestamp: new Date().toISOString(), session_limit: 2, checking_threshold: 1,
//     sessions_edge: 12, device: "Living-room TV",
//   });
//
// As a command: `SHARED_KEY=… node mint.mjs < data.json` prints a token for the JSON on
// stdin (sealed byte for byte as given); `--nonce <24 hex digits>` fixes the nonce, for
// checking the test vectors only.
import { createCipheriv, hkdfSync, randomBytes } from "node:crypto";

const SALT = "heartbeat backend token b1";
const INFO = "aes-256-gcm key";

/** The AES-256-GCM key for `sharedKey` (HKDF-SHA256). Derive it once and keep it. */
export function backendKey(sharedKey) {
  return Buffer.from(hkdfSync("sha256", Buffer.from(sharedKey, "utf8"), SALT, INFO, 32));
}

/** Seals `plaintext` (a string or bytes of heartbeat_data JSON) as a `b1.` token. */
export function sealBackendToken(key, plaintext, nonce = randomBytes(12)) {
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(Buffer.from("b1"));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const raw = Buffer.concat([nonce, ciphertext, cipher.getAuthTag()]);
  return "b1." + raw.toString("base64url");
}

/** Mints a `b1.` token for `data` (heartbeat_data without `session_id`). */
export function mintBackendToken(sharedKey, data) {
  return sealBackendToken(backendKey(sharedKey), JSON.stringify(data));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const sharedKey = process.env.SHARED_KEY;
  if (!sharedKey) {
    console.error("mint.mjs: set SHARED_KEY to the server's shared key");
    process.exit(2);
  }
  const at = process.argv.indexOf("--nonce");
  const nonce = at > 0 ? Buffer.from(process.argv[at + 1], "hex") : randomBytes(12);
  if (nonce.length !== 12) {
    console.error("mint.mjs: --nonce takes 24 hex digits (12 bytes)");
    process.exit(2);
  }
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const plaintext = Buffer.concat(chunks).toString("utf8").trim();
  JSON.parse(plaintext); // refuses what is not JSON before sealing it
  console.log(sealBackendToken(backendKey(sharedKey), plaintext, nonce));
}
