//! The custodian key file: a person's X25519 private key, kept on their machine encrypted with
//! a passphrase, never sent anywhere.
//!
//! The file is JSON (mode 0600, never overwritten):
//!
//! ```json
//! {"format": "flowlink-custodian-key", "version": 1,
//!  "server": "https://cp.example", "org_id": "…", "custodian_id": "…", "public_key": "<base64>",
//!  "kdf": {"alg": "argon2id", "m_cost_kib": 65536, "t_cost": 3, "p_cost": 1, "salt": "<base64>"},
//!  "cipher": {"alg": "aes-256-gcm", "nonce": "<base64>", "ct": "<base64>"}}
//! ```
//!
//! The AES-256-GCM key is argon2id(passphrase, salt); the associated data binds every other
//! field (organisation, custodian, public key, parameters), so a file whose header was changed
//! does not open. A wrong passphrase and a changed file give the same error: neither can be
//! told apart without the key.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flowlink_proto::sealed::{BoxPublicKey, OrgSecretKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The `format` field.
pub const FORMAT: &str = "flowlink-custodian-key";
/// argon2id memory, KiB.
pub const M_COST_KIB: u32 = 64 * 1024;
/// argon2id passes.
pub const T_COST: u32 = 3;
/// argon2id lanes.
pub const P_COST: u32 = 1;
/// Shortest passphrase accepted for a new file.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file exists (a key file is never overwritten).
    #[error(
        "{0} already exists; a custodian key file is never overwritten (it may be the only copy of a key): choose another path"
    )]
    Exists(PathBuf),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a key file this version writes.
    #[error("{path} is not a FlowLink custodian key file ({why})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The passphrase does not open it.
    #[error(
        "the passphrase does not open the custodian key file {0} (wrong passphrase, or the file was changed); check FLOWLINK_CUSTODIAN_PASSPHRASE or --passphrase-file"
    )]
    WrongPassphrase(PathBuf),
    /// The passphrase is too weak for a new file.
    #[error(
        "the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters; choose a longer one (it protects a key that can open every secret of the organisation)"
    )]
    WeakPassphrase,
    /// Key derivation failed.
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kdf {
    alg: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cipher {
    alg: String,
    nonce: String,
    ct: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    format: String,
    version: u32,
    server: String,
    org_id: String,
    custodian_id: String,
    public_key: String,
    kdf: Kdf,
    cipher: Cipher,
}

impl FileBody {
    /// Everything but the ciphertext, as associated data.
    fn aad(&self) -> Vec<u8> {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.format,
            self.version,
            self.server,
            self.org_id,
            self.custodian_id,
            self.public_key,
            self.kdf.alg,
            self.kdf.m_cost_kib,
            self.kdf.t_cost,
            self.kdf.p_cost,
            self.kdf.salt,
            self.cipher.alg
        )
        .into_bytes()
    }
}

/// An opened custodian key file.
pub struct CustodianKey {
    /// The control plane it was registered with (informational).
    pub server: String,
    /// The organisation.
    pub org_id: String,
    /// The custodian id (`custodian:<id>` is its recipient name).
    pub custodian_id: String,
    /// The private key.
    pub key: OrgSecretKey,
}

impl std::fmt::Debug for CustodianKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustodianKey")
            .field("org_id", &self.org_id)
            .field("custodian_id", &self.custodian_id)
            .field("public_key", &self.key.public_key().to_base64())
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn derive(
    passphrase: &[u8],
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    let params =
        argon2::Params::new(m, t, p, Some(32)).map_err(|e| KeyFileError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
    Ok(key)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    crate::auth::secret::fill_random(&mut b);
    b
}

/// Creates `path` (0600) for a new key file, failing if it exists. The caller registers the
/// key, then [`write`]s into the returned handle, or removes the file on failure.
pub fn reserve(path: &Path) -> Result<std::fs::File, KeyFileError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists(path.to_path_buf())
        } else {
            KeyFileError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })
}

/// Checks a passphrase for a new file.
pub fn check_new_passphrase(passphrase: &str) -> Result<(), KeyFileError> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(KeyFileError::WeakPassphrase);
    }
    Ok(())
}

/// Encrypts `key` with `passphrase` into `file` (from [`reserve`]) and syncs it.
pub fn write(
    file: &mut std::fs::File,
    path: &Path,
    key: &CustodianKey,
    passphrase: &str,
) -> Result<(), KeyFileError> {
    check_new_passphrase(passphrase)?;
    let salt: [u8; 16] = random();
    let nonce: [u8; 12] = random();
    let mut body = FileBody {
        format: FORMAT.to_string(),
        version: 1,
        server: key.server.clone(),
        org_id: key.org_id.clone(),
        custodian_id: key.custodian_id.clone(),
        public_key: key.key.public_key().to_base64(),
        kdf: Kdf {
            alg: "argon2id".into(),
            m_cost_kib: M_COST_KIB,
            t_cost: T_COST,
            p_cost: P_COST,
            salt: STANDARD.encode(salt),
        },
        cipher: Cipher {
            alg: "aes-256-gcm".into(),
            nonce: STANDARD.encode(nonce),
            ct: String::new(),
        },
    };
    let aead_key = derive(passphrase.as_bytes(), &salt, M_COST_KIB, T_COST, P_COST)?;
    let cipher = Aes256Gcm::new_from_slice(aead_key.as_ref())
        .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
    let secret = key.key.to_bytes();
    let aad = body.aad();
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: secret.as_ref(),
                aad: &aad,
            },
        )
        .map_err(|_| KeyFileError::Kdf("encryption failed".into()))?;
    body.cipher.ct = STANDARD.encode(ct);
    let text = serde_json::to_string_pretty(&body).map_err(|e| KeyFileError::Format {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    file.write_all(text.as_bytes()).map_err(io(path))?;
    file.write_all(b"\n").map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok(())
}

/// Opens a key file with `passphrase`.
pub fn open(path: &Path, passphrase: &str) -> Result<CustodianKey, KeyFileError> {
    let format = |why: &str| KeyFileError::Format {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let body: FileBody = serde_json::from_str(&text).map_err(|e| format(&e.to_string()))?;
    if body.format != FORMAT || body.version != 1 {
        return Err(format("unknown format or version"));
    }
    if body.kdf.alg != "argon2id" || body.cipher.alg != "aes-256-gcm" {
        return Err(format("unknown key derivation or cipher"));
    }
    let (m, t, p) = (body.kdf.m_cost_kib, body.kdf.t_cost, body.kdf.p_cost);
    if !(8..=4 * 1024 * 1024).contains(&m) || !(1..=64).contains(&t) || !(1..=64).contains(&p) {
        return Err(format("key-derivation parameters out of range"));
    }
    let salt = STANDARD
        .decode(body.kdf.salt.as_bytes())
        .map_err(|_| format("salt is not base64"))?;
    let nonce: [u8; 12] = STANDARD
        .decode(body.cipher.nonce.as_bytes())
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| format("nonce is not base64 of 12 bytes"))?;
    let ct = STANDARD
        .decode(body.cipher.ct.as_bytes())
        .map_err(|_| format("ciphertext is not base64"))?;
    let public = BoxPublicKey::from_base64(&body.public_key)
        .map_err(|e| format(&format!("public key: {e}")))?;
    let aead_key = derive(passphrase.as_bytes(), &salt, m, t, p)?;
    let cipher = Aes256Gcm::new_from_slice(aead_key.as_ref())
        .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &ct,
                    aad: &body.aad(),
                },
            )
            .map_err(|_| KeyFileError::WrongPassphrase(path.to_path_buf()))?,
    );
    let bytes: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| format("the key is not 32 bytes"))?;
    let key = OrgSecretKey::from_bytes(bytes);
    if key.public_key() != public {
        return Err(format("the key does not match its public key"));
    }
    Ok(CustodianKey {
        server: body.server,
        org_id: body.org_id,
        custodian_id: body.custodian_id,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_refuses_what_it_should() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("custodian.key");
        let key = CustodianKey {
            server: "http://127.0.0.1:1".into(),
            org_id: "org".into(),
            custodian_id: "c1".into(),
            key: OrgSecretKey::generate(),
        };
        let public = key.key.public_key();
        let mut f = reserve(&path).expect("reserve");
        assert!(matches!(
            write(&mut f, &path, &key, "short"),
            Err(KeyFileError::WeakPassphrase)
        ));
        write(&mut f, &path, &key, "correct horse battery").expect("write");
        drop(f);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let secret = STANDARD.encode(*key.key.to_bytes());
        assert!(
            !text.contains(&secret),
            "the private key is not in the clear"
        );
        let opened = open(&path, "correct horse battery").expect("open");
        assert_eq!(opened.key.public_key(), public);
        assert_eq!(opened.custodian_id, "c1");
        assert!(matches!(
            open(&path, "wrong horse battery"),
            Err(KeyFileError::WrongPassphrase(_))
        ));
        assert!(matches!(reserve(&path), Err(KeyFileError::Exists(_))));
        // A changed header does not open either.
        std::fs::write(&path, text.replace("\"c1\"", "\"c2\"")).expect("rewrite");
        assert!(matches!(
            open(&path, "correct horse battery"),
            Err(KeyFileError::WrongPassphrase(_))
        ));
    }
}
