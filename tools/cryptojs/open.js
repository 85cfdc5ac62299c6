// Reads one JSON line per token from stdin: {"passphrase": "...", "token": "..."}.
// Writes one JSON line per token to stdout: the decrypted JSON object, or {"error": "..."}.
// Token layout (SPEC 3.3): hex(salt 16 B) + hex(iv 16 B) + base64(AES-256-CBC/PKCS#7),
// key = PBKDF2-HMAC-SHA1(passphrase, salt, 3 iterations, 32 bytes).
const CryptoJS = require("crypto-js");
const readline = require("readline");

function open(passphrase, token) {
  const salt = CryptoJS.enc.Hex.parse(token.slice(0, 32));
  const iv = CryptoJS.enc.Hex.parse(token.slice(32, 64));
  const key = CryptoJS.PBKDF2(passphrase, salt, { keySize: 8, iterations: 3, hasher: CryptoJS.algo.SHA1 });
  const plain = CryptoJS.AES.decrypt(token.slice(64), key, { iv, mode: CryptoJS.mode.CBC, padding: CryptoJS.pad.Pkcs7 });
  return JSON.parse(plain.toString(CryptoJS.enc.Utf8));
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let out;
  try {
    const { passphrase, token } = JSON.parse(line);
    out = open(passphrase, token);
  } catch (error) {
    out = { error: String(error) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
});
