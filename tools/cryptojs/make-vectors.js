// Makes heartbeat-core/tests/vectors/cryptojs-roundtrip.json with the real crypto-js@3, the
// library the Node.js heartbeat server and its backends seal legacy tokens with.
//
//   npm ci && node make-vectors.js            # rewrites the file
//   npm ci && node make-vectors.js --check    # exits 1 if the committed file differs
//
// Token layout (SPEC 3.3): hex(salt 16 B) + hex(iv 16 B) + base64(AES-256-CBC/PKCS#7(JSON)),
// key = PBKDF2-HMAC-SHA1(passphrase as UTF-8, salt, 3 iterations, 32 bytes). Salt and IV are
// fixed per vector (derived from its index) so that the Rust tests can seal the same
// plaintext and compare byte for byte: AES-CBC is deterministic for a key and IV, so equal
// bytes for every padding length prove that crypto-js opens what Rust seals.
"use strict";
const fs = require("fs");
const path = require("path");
const CryptoJS = require("crypto-js");

const OUT = path.join(__dirname, "../../heartbeat-core/tests/vectors/cryptojs-roundtrip.json");
const PASSPHRASES = ["topsecret", "tøpsecret🔑", "k", "пароль ключ", "x".repeat(64)];
const USERS = [13, "user-äöü-🎬", "42", 9007199254740991, "田中"];

function keyFor(passphrase, salt) {
  return CryptoJS.PBKDF2(passphrase, salt, { keySize: 8, iterations: 3, hasher: CryptoJS.algo.SHA1 });
}

function seal(passphrase, salt, iv, plaintext) {
  const key = keyFor(passphrase, salt);
  const body = CryptoJS.AES.encrypt(plaintext, key, { iv, mode: CryptoJS.mode.CBC, padding: CryptoJS.pad.Pkcs7 });
  return salt.toString(CryptoJS.enc.Hex) + iv.toString(CryptoJS.enc.Hex) + body.toString();
}

// What the Node server does with a token (services/heartbeat.js): decrypt, UTF-8, JSON.parse.
function open(passphrase, token) {
  const salt = CryptoJS.enc.Hex.parse(token.slice(0, 32));
  const iv = CryptoJS.enc.Hex.parse(token.slice(32, 64));
  const plain = CryptoJS.AES.decrypt(token.slice(64), keyFor(passphrase, salt), {
    iv, mode: CryptoJS.mode.CBC, padding: CryptoJS.pad.Pkcs7,
  });
  return JSON.parse(plain.toString(CryptoJS.enc.Utf8));
}

function fixedBytes(label, index) {
  const words = CryptoJS.SHA256(`${label}-${index}`).words.slice(0, 4);
  return CryptoJS.lib.WordArray.create(words, 16);
}

// A token's plaintext whose UTF-8 length leaves `residue` bytes in the last AES block, so
// PKCS#7 pads with 16 - residue bytes: every padding length from 1 to 16 is covered.
function plaintextWithResidue(index, residue) {
  const data = {
    user_id: USERS[index % USERS.length],
    asset_id: index % 2 === 0 ? `movie/${index}` : 100 + index,
    session_id: "2b0b5b4e-7f4a-4c1e-9d43-5c8a0f6d2e11",
    heartbeat_cycle: 3,
    cycle_lower_tolerance: 0.3,
    cycle_upper_tolerance: 0.8,
    reject_strategy: index % 3 === 0 ? "MOST_RECENT" : "LEAST_RECENT",
    timestamp: "2026-11-22T10:00:30.123Z",
    started_at: "2026-11-22T10:00:00.000Z",
    session_limit: 2,
    checking_threshold: 3,
    sessions_edge: 10,
    note: "",
  };
  for (;;) {
    const text = JSON.stringify(data);
    if (Buffer.byteLength(text, "utf8") % 16 === residue) return text;
    // "é" is two bytes in UTF-8, "x" one: alternate to reach every residue.
    data.note += data.note.length % 5 === 4 ? "é" : "x";
  }
}

const roundtrip = [];
let index = 0;
for (const passphrase of PASSPHRASES) {
  for (let residue = 0; residue < 16; residue++, index++) {
    const salt = fixedBytes("salt", index);
    const iv = fixedBytes("iv", index);
    const plaintext = plaintextWithResidue(index, residue);
    const token = seal(passphrase, salt, iv, plaintext);
    const opened = JSON.stringify(open(passphrase, token));
    if (opened !== plaintext) throw new Error(`crypto-js did not open its own token ${index}`);
    roundtrip.push({
      passphrase,
      salt_hex: salt.toString(CryptoJS.enc.Hex),
      iv_hex: iv.toString(CryptoJS.enc.Hex),
      plaintext,
      padding: 16 - residue,
      token,
    });
  }
}

// Tokens crypto-js cannot open with another passphrase: the Node server answers 406.
const wrongPassphrase = roundtrip.slice(0, 8).map((vector, i) => {
  const passphrase = PASSPHRASES[(PASSPHRASES.indexOf(vector.passphrase) + 1 + (i % (PASSPHRASES.length - 1))) % PASSPHRASES.length];
  let refused = false;
  try {
    open(passphrase, vector.token);
  } catch (error) {
    refused = true;
  }
  return { passphrase, token: vector.token, refused_by_cryptojs: refused };
});

const file = {
  about:
    "Made by tools/cryptojs/make-vectors.js with crypto-js@" + require("crypto-js/package.json").version +
    ". roundtrip: crypto-js sealed 'plaintext' (exact UTF-8 JSON) with 'passphrase', 'salt_hex' and 'iv_hex' into 'token', " +
    "and opened it again to the same text; 'padding' is the PKCS#7 padding length. " +
    "wrong_passphrase: what crypto-js does when opening a token with another passphrase.",
  roundtrip,
  wrong_passphrase: wrongPassphrase,
};
const text = JSON.stringify(file, null, 2) + "\n";
if (process.argv.includes("--check")) {
  if (fs.readFileSync(OUT, "utf8") !== text) {
    console.error(`${OUT} differs from what crypto-js makes now: run node make-vectors.js`);
    process.exit(1);
  }
  console.log(`${OUT}: ${roundtrip.length} vectors match crypto-js`);
} else {
  fs.writeFileSync(OUT, text);
  console.log(`wrote ${roundtrip.length} vectors to ${OUT}`);
}
