// The secrets pages' sealing: a value typed into the set form is sealed in this browser to the
// organisation's public key and only the sealed box leaves it. The construction is exactly
// flowlink-proto's `sealed::seal`: RFC 9180 HPKE, base mode, single shot, with
// DHKEM(X25519, HKDF-SHA256) (kem_id 0x0020), HKDF-SHA256 (kdf_id 0x0001) and AES-256-GCM
// (aead_id 0x0002), and the context encoding of `SealContext::Secret` as both `info` and the
// AEAD's associated data. Everything runs on WebCrypto (X25519, HMAC-SHA256, AES-GCM).
//
// Without X25519 in WebCrypto (an old browser, or a page not served over HTTPS, where
// `crypto.subtle` is absent) the form stays disabled and the page's notice, which names the CLI
// command, stays visible.
//
// `window.FlowLinkSeal` exposes the pieces, including `sealWithEphemeral`, which takes the
// ephemeral key instead of making one: it exists so tests can check this code against RFC 9180's
// known answers, and must never seal a real value (a reused ephemeral key reuses the AEAD key and
// nonce).
(function () {
  "use strict";

  var ALG = "hpke-base-x25519-sha256-aes256gcm";
  var CONTEXT_DOMAIN = "flowlink-sealed-v1";
  var KEM_ID = 0x0020;
  var KDF_ID = 0x0001;
  // The AEADs by name: aead_id and key length Nk. AES-128-GCM only for RFC 9180's vectors.
  var AEADS = {
    "aes-256-gcm": { id: 0x0002, nk: 32 },
    "aes-128-gcm": { id: 0x0001, nk: 16 }
  };
  var NONCE_LEN = 12;
  var MAX_VALUE_BYTES = 64 * 1024;
  var NAME = /^[A-Z_][A-Z0-9_]{0,127}$/;
  // PKCS #8 header of an X25519 private key (RFC 8410): the 32 key bytes follow.
  var PKCS8_X25519 = fromHex("302e020100300506032b656e04220420");
  // The X25519 base point (u = 9): DH(sk, base point) is sk's public key.
  var BASE_POINT = new Uint8Array(32);
  BASE_POINT[0] = 9;

  var utf8 = new TextEncoder();

  function fromHex(hex) {
    if (hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) {
      throw new Error("not hexadecimal");
    }
    var out = new Uint8Array(hex.length / 2);
    for (var i = 0; i < out.length; i++) {
      out[i] = parseInt(hex.substr(i * 2, 2), 16);
    }
    return out;
  }

  function toHex(bytes) {
    return Array.prototype.map.call(bytes, function (b) {
      return (b < 16 ? "0" : "") + b.toString(16);
    }).join("");
  }

  function toBase64(bytes) {
    var s = "";
    for (var i = 0; i < bytes.length; i++) {
      s += String.fromCharCode(bytes[i]);
    }
    return btoa(s);
  }

  function fromBase64(text) {
    var s = atob(text);
    var out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) {
      out[i] = s.charCodeAt(i);
    }
    return out;
  }

  function concat() {
    var total = 0;
    var i;
    for (i = 0; i < arguments.length; i++) {
      total += arguments[i].length;
    }
    var out = new Uint8Array(total);
    var at = 0;
    for (i = 0; i < arguments.length; i++) {
      out.set(arguments[i], at);
      at += arguments[i].length;
    }
    return out;
  }

  // I2OSP(n, len), big-endian, for the small numbers used here.
  function i2osp(n, len) {
    var out = new Uint8Array(len);
    for (var i = len - 1; i >= 0; i--) {
      out[i] = n & 0xff;
      n = Math.floor(n / 256);
    }
    return out;
  }

  function isAllZero(bytes) {
    var acc = 0;
    for (var i = 0; i < bytes.length; i++) {
      acc |= bytes[i];
    }
    return acc === 0;
  }

  // "KEM" || kem_id.
  var KEM_SUITE_ID = concat(utf8.encode("KEM"), i2osp(KEM_ID, 2));

  // "HPKE" || kem_id || kdf_id || aead_id.
  function hpkeSuiteId(aead) {
    return concat(utf8.encode("HPKE"), i2osp(KEM_ID, 2), i2osp(KDF_ID, 2), i2osp(aead.id, 2));
  }

  async function hmacSha256(key, data) {
    var k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return new Uint8Array(await crypto.subtle.sign("HMAC", k, data));
  }

  // LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" || suite_id || label || ikm).
  // An empty salt is HashLen zero bytes (RFC 5869 §2.2); HMAC pads the key with zeros anyway,
  // and WebCrypto refuses an empty HMAC key.
  function labeledExtract(suiteId, salt, label, ikm) {
    var key = salt.length ? salt : new Uint8Array(32);
    return hmacSha256(key, concat(utf8.encode("HPKE-v1"), suiteId, utf8.encode(label), ikm));
  }

  // LabeledExpand(prk, label, info, L) = HKDF-Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id
  // || label || info, L). Every L here is at most 32, one HMAC block: T(1) = HMAC(prk, info || 1).
  async function labeledExpand(suiteId, prk, label, info, length) {
    if (length > 32) {
      throw new Error("LabeledExpand of more than 32 bytes is not needed here");
    }
    var labeledInfo = concat(i2osp(length, 2), utf8.encode("HPKE-v1"), suiteId, utf8.encode(label), info);
    var t1 = await hmacSha256(prk, concat(labeledInfo, Uint8Array.of(1)));
    return t1.slice(0, length);
  }

  function importPublic(bytes) {
    if (bytes.length !== 32) {
      throw new Error("an X25519 public key has 32 bytes, not " + bytes.length);
    }
    return crypto.subtle.importKey("raw", bytes, { name: "X25519" }, true, []);
  }

  function importPrivate(bytes) {
    if (bytes.length !== 32) {
      throw new Error("an X25519 private key has 32 bytes, not " + bytes.length);
    }
    return crypto.subtle.importKey("pkcs8", concat(PKCS8_X25519, bytes), { name: "X25519" }, false, ["deriveBits"]);
  }

  // DH(sk, pk), refusing an all-zero output (RFC 9180 §7.1.4: a low-order public key).
  async function dh(privateKey, publicBytes) {
    var pub = await importPublic(publicBytes);
    var out = new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: pub }, privateKey, 256));
    if (isAllZero(out)) {
      throw new Error("the public key is a low-order point; nothing sealed to it would be secret");
    }
    return out;
  }

  // Encap(pkR) with the ephemeral key pair given: { shared, enc }.
  async function encap(recipient, ephemeral) {
    var dhOut = await dh(ephemeral.privateKey, recipient);
    var enc = ephemeral.publicBytes;
    var kemContext = concat(enc, recipient);
    var eaePrk = await labeledExtract(KEM_SUITE_ID, new Uint8Array(0), "eae_prk", dhOut);
    var shared = await labeledExpand(KEM_SUITE_ID, eaePrk, "shared_secret", kemContext, 32);
    return { shared: shared, enc: enc };
  }

  // KeySchedule(mode_base, shared_secret, info, "", ""): { key, baseNonce }.
  async function keySchedule(aead, shared, info) {
    var suiteId = hpkeSuiteId(aead);
    var empty = new Uint8Array(0);
    var pskIdHash = await labeledExtract(suiteId, empty, "psk_id_hash", empty);
    var infoHash = await labeledExtract(suiteId, empty, "info_hash", info);
    var context = concat(Uint8Array.of(0), pskIdHash, infoHash);
    var secret = await labeledExtract(suiteId, shared, "secret", empty);
    return {
      key: await labeledExpand(suiteId, secret, "key", context, aead.nk),
      baseNonce: await labeledExpand(suiteId, secret, "base_nonce", context, NONCE_LEN)
    };
  }

  // SealBase(pkR, info, aad, pt), sequence number 0: { enc, ct } (ct ends with the 16-byte tag).
  async function hpkeSeal(aeadName, recipient, ephemeral, info, aad, plaintext) {
    var aead = AEADS[aeadName];
    if (!aead) {
      throw new Error("unknown AEAD " + aeadName);
    }
    var kem = await encap(recipient, ephemeral);
    var schedule = await keySchedule(aead, kem.shared, info);
    var key = await crypto.subtle.importKey("raw", schedule.key, { name: "AES-GCM" }, false, ["encrypt"]);
    var ct = new Uint8Array(await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: schedule.baseNonce, additionalData: aad, tagLength: 128 }, key, plaintext));
    return { enc: kem.enc, ct: ct };
  }

  // The context encoding of `SealContext::Secret`: each piece as a 4-byte big-endian length
  // and its UTF-8 bytes; numbers as decimal text.
  function secretContext(orgId, name, version, keyVersion) {
    var pieces = [CONTEXT_DOMAIN, ALG, "secret", orgId, name, String(version), String(keyVersion)];
    return concat.apply(null, pieces.map(function (p) {
      var bytes = utf8.encode(p);
      return concat(i2osp(bytes.length, 4), bytes);
    }));
  }

  // A fresh ephemeral key pair from WebCrypto.
  async function freshEphemeral() {
    var pair = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
    var publicBytes = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    return { privateKey: pair.privateKey, publicBytes: publicBytes };
  }

  // A given ephemeral private key (known-answer tests only): its public key is DH(sk, 9).
  async function givenEphemeral(privateBytes) {
    var privateKey = await importPrivate(privateBytes);
    var publicBytes = await dh(privateKey, BASE_POINT);
    return { privateKey: privateKey, publicBytes: publicBytes };
  }

  // Seals `plaintext` (bytes) to the base64 public key for the context bytes: the SealedBox
  // fields { alg, enc, ct } as the API takes them.
  async function seal(publicKeyBase64, context, plaintext) {
    var recipient = fromBase64(publicKeyBase64);
    var sealed = await hpkeSeal("aes-256-gcm", recipient, await freshEphemeral(), context, context, plaintext);
    return { alg: ALG, enc: toBase64(sealed.enc), ct: toBase64(sealed.ct) };
  }

  // For known-answer tests only: SealBase with the ephemeral private key given. Takes and
  // returns hexadecimal: { aead, recipient, ephemeral, info, aad, plaintext } → { enc, ct }.
  async function sealWithEphemeral(v) {
    var sealed = await hpkeSeal(v.aead, fromHex(v.recipient), await givenEphemeral(fromHex(v.ephemeral)),
      fromHex(v.info), fromHex(v.aad), fromHex(v.plaintext));
    return { enc: toHex(sealed.enc), ct: toHex(sealed.ct) };
  }

  // Whether this browser can seal: WebCrypto with X25519 key generation and key agreement.
  async function supported() {
    try {
      if (!window.crypto || !crypto.subtle || typeof TextEncoder === "undefined") {
        return false;
      }
      var a = await freshEphemeral();
      var b = await freshEphemeral();
      var shared = await dh(a.privateKey, b.publicBytes);
      return shared.length === 32;
    } catch (e) {
      return false;
    }
  }

  window.FlowLinkSeal = {
    ALG: ALG,
    seal: seal,
    secretContext: secretContext,
    sealWithEphemeral: sealWithEphemeral,
    supported: supported
  };

  // ---------------------------------------------------------------------------------------
  // The set form.

  function showError(form, message) {
    var error = form.querySelector("#seal-error");
    error.textContent = message;
    error.hidden = false;
  }

  async function onSubmit(event) {
    var form = event.target;
    event.preventDefault();
    var error = form.querySelector("#seal-error");
    var status = form.querySelector("#seal-status");
    var button = form.querySelector("#seal-submit");
    var valueField = form.querySelector("#secret-value");
    var name = form.querySelector("#secret-name").value.trim();
    error.hidden = true;
    if (!NAME.test(name)) {
      showError(form, "Give a name of capital letters, digits and _, not starting with a digit (e.g. GITHUB_TOKEN).");
      form.querySelector("#secret-name").focus();
      return;
    }
    var value = utf8.encode(valueField.value);
    if (value.length === 0) {
      showError(form, "Type the value to store: an empty value is not a secret.");
      valueField.focus();
      return;
    }
    if (value.length > MAX_VALUE_BYTES) {
      showError(form, "The value is longer than " + MAX_VALUE_BYTES + " bytes; store a shorter one.");
      valueField.focus();
      return;
    }
    var orgId = form.dataset.orgId;
    var keyVersion = form.dataset.keyVersion;
    var version = (BigInt(form.dataset.baseVersion) + 1n).toString();
    button.disabled = true;
    status.textContent = "Sealing the value in this browser…";
    try {
      var sealed = await seal(form.dataset.publicKey, secretContext(orgId, name, version, keyVersion), value);
      // The plaintext leaves the page's form before anything is sent.
      valueField.value = "";
      value.fill(0);
      form.querySelector("#sealed").value = JSON.stringify({
        alg: sealed.alg, enc: sealed.enc, ct: sealed.ct,
        org_id: orgId, name: name, version: version, key_version: keyVersion
      });
      status.textContent = "Sealed; saving…";
      form.submit();
    } catch (e) {
      button.disabled = false;
      status.textContent = "";
      showError(form, "The value could not be sealed in this browser (" + e.message + "); nothing was sent. Use the command shown above instead.");
    }
  }

  async function start() {
    var form = document.getElementById("seal-form");
    if (!form) {
      return;
    }
    if (!(await supported())) {
      // The notice naming the CLI command stays, and the form stays disabled.
      form.dataset.ready = "false";
      return;
    }
    document.getElementById("seal-unsupported").hidden = true;
    form.querySelector("#seal-fields").disabled = false;
    form.addEventListener("submit", onSubmit);
    form.dataset.ready = "true";
  }

  start();
})();
