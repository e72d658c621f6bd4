//! The device credential: who this device is and the keys that prove it.
//!
//! # What is stored
//! The device id, organisation, control-plane URL, the organisation's policy key (the only key
//! bundles are accepted from), the device's Ed25519 signing key (it answers link challenges)
//! and its X25519 box key (secrets are wrapped to it), plus the enrolment options (`--ca-file`,
//! `--allow-insecure-ws`) so every later run connects the same way.
//!
//! # Where
//! 1. **The OS keyring** (Linux keyutils through `keyring-core` and
//!    `linux-keyutils-keyring-store`): the process joins a session keyring first; the store also
//!    links the key into the user's persistent keyring, so other processes of the same user find
//!    it. keyutils lives in kernel memory: it is gone after a reboot, and container runtimes often
//!    block `keyctl` (Docker's default seccomp profile does). Writing it is best effort.
//!    `FLOWLINK_KEYRING=off` skips it.
//! 2. **An encrypted file**, `<data-dir>/credential.enc`, mode 0600 in a 0700 directory: the
//!    durable copy. AES-256-GCM under a key derived with Argon2id from this machine's
//!    `/etc/machine-id` (or `/var/lib/dbus/machine-id`), the user id and a random 16-byte salt kept
//!    in the file's header (which is also the cipher's associated data).
//!
//! Loading tries the keyring first, then the file.
//!
//! # What the file protects against, honestly
//! A copy of the file taken to another machine (a backup, a synced home directory, a stolen
//! disk image without `/etc`) does not open there, and another user id on the same machine derives
//! a different key. It does **not** protect against anyone who can read both the file and this
//! machine's machine-id (world-readable) as the same user id: the key is derived, not kept by a
//! hardware module or a password the user types. Treat the file like an SSH private key. Where a
//! machine has no machine-id (some containers), the file is bound to the user id only, and
//! `enroll` says so.
//!
//! Key material lives in `Zeroizing` buffers, is never logged ([`Credential`]'s `Debug` omits it)
//! and is never written unencrypted.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::LinkError;

/// The encrypted credential file's name in the data directory.
pub const CREDENTIAL_FILE: &str = "credential.enc";

/// The keyring service name.
const KEYRING_SERVICE: &str = "flowlink-proxy";

/// The plaintext blob: magic, 32 bytes signing key, 32 bytes box key, JSON metadata.
const BLOB_MAGIC: &[u8; 4] = b"FLC1";

/// The file: magic and version, then Argon2 parameters, salt, nonce, ciphertext.
const FILE_MAGIC: &[u8; 8] = b"FLCRED\x00\x01";

/// Argon2id parameters for the file key (OWASP's minimum: 19 MiB, 2 passes).
const ARGON2_M_KIB: u32 = 19 * 1024;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;

/// Where a credential was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// The OS keyring.
    Keyring,
    /// The encrypted file.
    File,
}

impl CredentialSource {
    /// For people.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Keyring => "keyring",
            CredentialSource::File => "encrypted file",
        }
    }
}

/// An enrolled device's credential.
pub struct Credential {
    /// The device id.
    pub device_id: String,
    /// The device's name.
    pub device_name: String,
    /// The organisation.
    pub org_id: String,
    /// Its slug.
    pub org_slug: String,
    /// The control plane, without a trailing slash.
    pub server_url: String,
    /// The org's policy key: bundles must verify with it.
    pub policy_key: VerifyingKey,
    /// Its key id.
    pub policy_key_id: String,
    /// The device's labels.
    pub labels: BTreeMap<String, String>,
    /// A private CA to trust for the control plane.
    pub ca_file: Option<PathBuf>,
    /// Whether `ws://` / `http://` to a non-loopback host was allowed at enrolment.
    pub allow_insecure: bool,
    /// When, Unix µs.
    pub enrolled_at_us: i64,
    signing: Zeroizing<[u8; 32]>,
    boxing: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("device_id", &self.device_id)
            .field("org_id", &self.org_id)
            .field("server_url", &self.server_url)
            .field("policy_key_id", &self.policy_key_id)
            .finish_non_exhaustive()
    }
}

/// Fresh device keys, before enrolment.
pub struct DeviceKeys {
    signing: Zeroizing<[u8; 32]>,
    boxing: Zeroizing<[u8; 32]>,
}

impl DeviceKeys {
    /// Generates an Ed25519 signing key and an X25519 box key from the OS's random source.
    pub fn generate() -> Result<DeviceKeys, LinkError> {
        let mut signing = Zeroizing::new([0u8; 32]);
        let mut boxing = Zeroizing::new([0u8; 32]);
        getrandom::fill(signing.as_mut()).map_err(|e| LinkError::Random(e.to_string()))?;
        getrandom::fill(boxing.as_mut()).map_err(|e| LinkError::Random(e.to_string()))?;
        Ok(DeviceKeys { signing, boxing })
    }

    /// The signing key's public half, base64.
    pub fn signing_public(&self) -> String {
        STANDARD.encode(
            SigningKey::from_bytes(&self.signing)
                .verifying_key()
                .as_bytes(),
        )
    }

    /// The box key's public half, base64.
    pub fn box_public(&self) -> String {
        let secret = x25519_dalek::StaticSecret::from(*self.boxing);
        STANDARD.encode(x25519_dalek::PublicKey::from(&secret).as_bytes())
    }
}

/// What enrolment learned, to be stored with the keys.
pub struct Enrolled {
    /// See [`Credential`].
    pub device_id: String,
    /// See [`Credential`].
    pub device_name: String,
    /// See [`Credential`].
    pub org_id: String,
    /// See [`Credential`].
    pub org_slug: String,
    /// See [`Credential`].
    pub server_url: String,
    /// See [`Credential`].
    pub policy_key: VerifyingKey,
    /// See [`Credential`].
    pub policy_key_id: String,
    /// See [`Credential`].
    pub labels: BTreeMap<String, String>,
    /// See [`Credential`].
    pub ca_file: Option<PathBuf>,
    /// See [`Credential`].
    pub allow_insecure: bool,
}

impl Credential {
    /// Joins enrolment facts and the keys.
    pub fn new(facts: Enrolled, keys: DeviceKeys) -> Credential {
        Credential {
            device_id: facts.device_id,
            device_name: facts.device_name,
            org_id: facts.org_id,
            org_slug: facts.org_slug,
            server_url: facts.server_url,
            policy_key: facts.policy_key,
            policy_key_id: facts.policy_key_id,
            labels: facts.labels,
            ca_file: facts.ca_file,
            allow_insecure: facts.allow_insecure,
            enrolled_at_us: crate::audit::now_us(),
            signing: keys.signing,
            boxing: keys.boxing,
        }
    }

    /// Signs `message` with the device key (the link's challenge answer).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        SigningKey::from_bytes(&self.signing)
            .sign(message)
            .to_bytes()
    }

    /// The device's public signing key.
    pub fn signing_public(&self) -> VerifyingKey {
        SigningKey::from_bytes(&self.signing).verifying_key()
    }

    /// The device's X25519 secret, for unwrapping the org's secrets key.
    pub fn box_secret(&self) -> x25519_dalek::StaticSecret {
        x25519_dalek::StaticSecret::from(*self.boxing)
    }

    /// The device's X25519 public key, which custodians wrap the org key to.
    pub fn box_public(&self) -> flowlink_proto::sealed::BoxPublicKey {
        let public = x25519_dalek::PublicKey::from(&self.box_secret());
        flowlink_proto::sealed::BoxPublicKey(*public.as_bytes())
    }

    fn to_blob(&self) -> Zeroizing<Vec<u8>> {
        let meta = json!({
            "device_id": self.device_id,
            "device_name": self.device_name,
            "org_id": self.org_id,
            "org_slug": self.org_slug,
            "server_url": self.server_url,
            "policy_key": STANDARD.encode(self.policy_key.as_bytes()),
            "policy_key_id": self.policy_key_id,
            "labels": self.labels,
            "ca_file": self.ca_file.as_ref().map(|p| p.display().to_string()),
            "allow_insecure": self.allow_insecure,
            "enrolled_at_us": self.enrolled_at_us,
        });
        let meta = meta.to_string();
        let mut blob = Zeroizing::new(Vec::with_capacity(68 + meta.len()));
        blob.extend_from_slice(BLOB_MAGIC);
        blob.extend_from_slice(self.signing.as_ref());
        blob.extend_from_slice(self.boxing.as_ref());
        blob.extend_from_slice(meta.as_bytes());
        blob
    }

    fn from_blob(blob: &[u8]) -> Result<Credential, String> {
        if blob.len() < 68 || &blob[..4] != BLOB_MAGIC {
            return Err("not a FlowLink credential (unknown format)".into());
        }
        let mut signing = Zeroizing::new([0u8; 32]);
        signing.copy_from_slice(&blob[4..36]);
        let mut boxing = Zeroizing::new([0u8; 32]);
        boxing.copy_from_slice(&blob[36..68]);
        let meta: Value =
            serde_json::from_slice(&blob[68..]).map_err(|e| format!("metadata: {e}"))?;
        let text = |k: &str| {
            meta.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("metadata has no `{k}`"))
        };
        let key_b64 = text("policy_key")?;
        let key_bytes: [u8; 32] = STANDARD
            .decode(key_b64.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the policy key is not 32 bytes of base64")?;
        let policy_key = VerifyingKey::from_bytes(&key_bytes)
            .map_err(|_| "the policy key is not an Ed25519 key")?;
        let labels = meta
            .get("labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Credential {
            device_id: text("device_id")?,
            device_name: text("device_name").unwrap_or_default(),
            org_id: text("org_id")?,
            org_slug: text("org_slug").unwrap_or_default(),
            server_url: text("server_url")?,
            policy_key,
            policy_key_id: text("policy_key_id")?,
            labels,
            ca_file: meta
                .get("ca_file")
                .and_then(Value::as_str)
                .map(PathBuf::from),
            allow_insecure: meta
                .get("allow_insecure")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            enrolled_at_us: meta
                .get("enrolled_at_us")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            signing,
            boxing,
        })
    }
}

/// Where a save went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Whether the keyring took it.
    pub keyring: Result<(), String>,
    /// The file, when written.
    pub file: Result<PathBuf, String>,
    /// Whether the file is bound to a machine-id (false: to the user id only).
    pub machine_bound: bool,
}

/// The credential store of one data directory.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    data_dir: PathBuf,
    use_keyring: bool,
}

impl CredentialStore {
    /// The store for `data_dir`. The keyring is used unless `FLOWLINK_KEYRING=off`.
    pub fn new(data_dir: &Path) -> CredentialStore {
        let off = std::env::var("FLOWLINK_KEYRING")
            .is_ok_and(|v| v.eq_ignore_ascii_case("off") || v == "0");
        CredentialStore {
            data_dir: data_dir.to_owned(),
            use_keyring: !off,
        }
    }

    /// The encrypted file's path.
    pub fn file_path(&self) -> PathBuf {
        self.data_dir.join(CREDENTIAL_FILE)
    }

    /// The keyring user name: one credential per data directory.
    fn keyring_user(&self) -> String {
        let dir = std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        format!("device:{}", dir.display())
    }

    fn keyring_entry(&self) -> Result<keyring_core::Entry, String> {
        if !self.use_keyring {
            return Err("the keyring is turned off (FLOWLINK_KEYRING=off)".into());
        }
        // Join (or make) a session keyring first: without one, keyutils has nowhere to put keys.
        linux_keyutils::KeyRing::from_special_id(linux_keyutils::KeyRingIdentifier::Session, true)
            .map_err(|e| format!("no session keyring ({e:?}); keyctl may be blocked here"))?;
        let store = linux_keyutils_keyring_store::Store::new().map_err(|e| e.to_string())?;
        let store: std::sync::Arc<keyring_core::CredentialStore> = store;
        keyring_core::Entry::new_in_store(&store, KEYRING_SERVICE, &self.keyring_user())
            .map_err(|e| e.to_string())
    }

    /// Stores `cred` in the keyring (best effort) and the encrypted file. Errors only when
    /// neither took it.
    pub fn save(&self, cred: &Credential) -> Result<Saved, LinkError> {
        let blob = cred.to_blob();
        let keyring = self
            .keyring_entry()
            .and_then(|e| e.set_secret(&blob).map_err(|e| e.to_string()));
        let machine = machine_secret();
        let machine_bound = machine.1;
        let file = self
            .write_file(&blob, &machine.0)
            .map(|()| self.file_path())
            .map_err(|e| e.to_string());
        if keyring.is_err() && file.is_err() {
            return Err(LinkError::CredentialStorage {
                path: self.file_path(),
                why: format!(
                    "keyring: {}; file: {}",
                    keyring.err().unwrap_or_default(),
                    file.err().unwrap_or_default()
                ),
            });
        }
        Ok(Saved {
            keyring,
            file,
            machine_bound,
        })
    }

    /// The stored credential, from the keyring or the file; `None` when the device is not
    /// enrolled here. A file that exists but cannot be opened is an error (it may belong to
    /// another machine).
    pub fn load(&self) -> Result<Option<(Credential, CredentialSource)>, LinkError> {
        if let Ok(entry) = self.keyring_entry()
            && let Ok(blob) = entry.get_secret()
        {
            let blob = Zeroizing::new(blob);
            match Credential::from_blob(&blob) {
                Ok(c) => return Ok(Some((c, CredentialSource::Keyring))),
                Err(e) => tracing::warn!(
                    "the keyring's FlowLink credential is unreadable ({e}); trying the file"
                ),
            }
        }
        let path = self.file_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LinkError::CredentialUnreadable {
                    path,
                    why: e.to_string(),
                });
            }
        };
        let blob = open_file(&bytes, &machine_secret().0).map_err(|why| {
            LinkError::CredentialUnreadable {
                path: path.clone(),
                why,
            }
        })?;
        let cred = Credential::from_blob(&blob).map_err(|why| LinkError::CredentialUnreadable {
            path: path.clone(),
            why,
        })?;
        Ok(Some((cred, CredentialSource::File)))
    }

    /// Whether a credential file exists (without opening it).
    pub fn file_exists(&self) -> bool {
        self.file_path().exists()
    }

    /// Removes the credential from the keyring and the file.
    pub fn delete(&self) -> Result<(), LinkError> {
        if let Ok(entry) = self.keyring_entry() {
            let _ = entry.delete_credential();
        }
        match std::fs::remove_file(self.file_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LinkError::CredentialStorage {
                path: self.file_path(),
                why: e.to_string(),
            }),
        }
    }

    fn write_file(&self, blob: &[u8], machine: &[u8]) -> Result<(), LinkError> {
        let err = |why: String| LinkError::CredentialStorage {
            path: self.file_path(),
            why,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.data_dir)
            .map_err(|e| err(e.to_string()))?;
        let sealed = seal_file(blob, machine).map_err(err)?;
        // Written under a temporary name and renamed, so a crash never leaves half a credential.
        let tmp = self
            .data_dir
            .join(format!(".{CREDENTIAL_FILE}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(e.to_string()))?;
        let written = f.write_all(&sealed).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e.to_string()));
        }
        std::fs::rename(&tmp, self.file_path()).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e.to_string())
        })
    }
}

/// What the file key is derived from: this machine's id and the user id. The flag says whether a
/// machine-id was found.
fn machine_secret() -> (Zeroizing<Vec<u8>>, bool) {
    let id = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        });
    let bound = id.is_some();
    let uid = nix::unistd::getuid().as_raw();
    let secret = format!(
        "flowlink-credential-v1\n{}\n{uid}",
        id.unwrap_or_else(|| "no-machine-id".to_owned())
    );
    (Zeroizing::new(secret.into_bytes()), bound)
}

fn derive_key(
    machine: &[u8],
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(machine, salt, key.as_mut())
        .map_err(|e| e.to_string())?;
    Ok(key)
}

const HEADER_LEN: usize = 8 + 12 + 16 + 12;

/// `FILE_MAGIC | m | t | p (u32 LE each) | salt (16) | nonce (12) | AES-256-GCM(blob)`, the
/// header being the associated data.
fn seal_file(blob: &[u8], machine: &[u8]) -> Result<Vec<u8>, String> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(FILE_MAGIC);
    header.extend_from_slice(&ARGON2_M_KIB.to_le_bytes());
    header.extend_from_slice(&ARGON2_T.to_le_bytes());
    header.extend_from_slice(&ARGON2_P.to_le_bytes());
    header.extend_from_slice(&salt);
    header.extend_from_slice(&nonce);
    let key = derive_key(machine, &salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|e| e.to_string())?;
    let sealed = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: blob,
                aad: &header,
            },
        )
        .map_err(|_| "encryption failed".to_owned())?;
    header.extend_from_slice(&sealed);
    Ok(header)
}

fn open_file(bytes: &[u8], machine: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    if bytes.len() < HEADER_LEN + 16 || &bytes[..8] != FILE_MAGIC {
        return Err("not a FlowLink credential file (unknown format or version)".into());
    }
    let u32_at = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[i..i + 4]);
        u32::from_le_bytes(b)
    };
    let (m, t, p) = (u32_at(8), u32_at(12), u32_at(16));
    if m > 1024 * 1024 || t > 64 || p > 64 {
        return Err("the file's key-derivation parameters are out of range".into());
    }
    let salt = &bytes[20..36];
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&bytes[36..48]);
    let key = derive_key(machine, salt, m, t, p)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|e| e.to_string())?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &bytes[HEADER_LEN..],
                aad: &bytes[..HEADER_LEN],
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| {
            "it does not decrypt here: it was made on another machine or by another user, or it was altered; enrol this machine again with `flowlink-proxy enroll --force`".to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credential {
        let keys = DeviceKeys::generate().expect("keys");
        Credential::new(
            Enrolled {
                device_id: "dev-1".into(),
                device_name: "laptop".into(),
                org_id: "org-1".into(),
                org_slug: "acme".into(),
                server_url: "https://cp.example".into(),
                policy_key: SigningKey::from_bytes(&[9; 32]).verifying_key(),
                policy_key_id: "k1".into(),
                labels: BTreeMap::from([("env".into(), "dev".into())]),
                ca_file: Some(PathBuf::from("/etc/ca.pem")),
                allow_insecure: false,
            },
            keys,
        )
    }

    #[test]
    fn blob_round_trip_keeps_keys_and_facts() {
        let c = sample();
        let back = Credential::from_blob(&c.to_blob()).expect("parse");
        assert_eq!(back.device_id, "dev-1");
        assert_eq!(back.labels.get("env").map(String::as_str), Some("dev"));
        assert_eq!(back.ca_file, c.ca_file);
        assert_eq!(back.policy_key, c.policy_key);
        assert_eq!(back.signing_public(), c.signing_public());
        assert_eq!(back.box_secret().to_bytes(), c.box_secret().to_bytes());
        assert!(!format!("{c:?}").contains("signing"));
    }

    #[test]
    fn the_file_opens_only_with_the_same_machine_secret() {
        let c = sample();
        let blob = c.to_blob();
        let sealed = seal_file(&blob, b"machine-a\n0").expect("seal");
        assert!(
            !sealed.windows(6).any(|w| w == b"dev-1\""),
            "metadata must be encrypted"
        );
        let opened = open_file(&sealed, b"machine-a\n0").expect("open");
        assert_eq!(&opened[..], &blob[..]);
        let e = open_file(&sealed, b"machine-b\n0").expect_err("another machine");
        assert!(e.contains("another machine"), "{e}");
        let e = open_file(&sealed, b"machine-a\n1000").expect_err("another user");
        assert!(e.contains("another user"), "{e}");
        // The header is authenticated too.
        let mut tampered = sealed.clone();
        tampered[25] ^= 1;
        assert!(open_file(&tampered, b"machine-a\n0").is_err());
    }

    #[test]
    fn the_store_writes_a_0600_file_and_reads_it_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CredentialStore {
            data_dir: dir.path().join("data"),
            use_keyring: false,
        };
        assert!(store.load().expect("load").is_none());
        let saved = store.save(&sample()).expect("save");
        assert!(saved.keyring.is_err());
        let path = saved.file.expect("file");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (back, source) = store.load().expect("load").expect("some");
        assert_eq!(source, CredentialSource::File);
        assert_eq!(back.device_id, "dev-1");
        store.delete().expect("delete");
        assert!(store.load().expect("load").is_none());
    }
}
