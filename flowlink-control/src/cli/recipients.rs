//! The recipients a custodian has wrapped the organisation key to, pinned by key fingerprint.
//!
//! The control plane serves every recipient's public key. Without pins, a tampered control plane
//! could list a key of its own as a "device" and receive the organisation key at the next
//! `secrets key init|grant|rotate`. So the CLI keeps, beside the custodian key file
//! (`<key file>.recipients`, 0600, JSON), the fingerprint of every recipient it wrapped to, and
//! before wrapping sorts each recipient the control plane lists into:
//!
//! - **known**: pinned with this key; wrapped to.
//! - **new**: not pinned yet; wrapped to only when the person accepts it, by its fingerprint
//!   (`--accept device:<id>=SHA256:…`, compared with `flowlink-proxy status` on the device) or
//!   all new ones at once (`--accept-new`, trust on first use).
//! - **changed**: pinned with another key (a re-keyed device, or a substitution); wrapped to
//!   only when accepted by its new fingerprint. `--accept-new` never covers it.
//!
//! The custodian's own recipient must carry the key file's public key, whatever the pins say.
//! Pins are written only after the control plane accepted the wraps.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keyfile::CustodianKey;
use super::secrets::CliError;
use crate::api::secrets::RecipientView;

const FORMAT: &str = "flowlink-known-recipients";

/// `--accept` and `--accept-new`, parsed.
#[derive(Debug, Default, Clone)]
pub struct Acceptance {
    /// recipient (`device:<id>`, `custodian:<id>`) → leading hex digits of its fingerprint.
    by_recipient: BTreeMap<String, String>,
    /// Trust recipients seen for the first time.
    all_new: bool,
}

impl Acceptance {
    /// Parses `RECIPIENT=SHA256:HEX` items (16 to 64 hex digits).
    pub fn parse(items: &[String], all_new: bool) -> Result<Acceptance, CliError> {
        let mut by_recipient = BTreeMap::new();
        for item in items {
            let bad = || {
                CliError::Usage(format!(
                    "--accept `{item}` is not RECIPIENT=FINGERPRINT, e.g. device:0b1c…=SHA256:4f2a9c0d1e2b3a47 (16 to 64 hex digits)"
                ))
            };
            let (recipient, fp) = item.split_once('=').ok_or_else(bad)?;
            let recipient = recipient.trim();
            let kind_ok = recipient
                .split_once(':')
                .is_some_and(|(k, id)| (k == "device" || k == "custodian") && !id.is_empty());
            let Some(hex) = flowlink_proto::sealed::parse_fingerprint(fp).filter(|_| kind_ok)
            else {
                return Err(bad());
            };
            if by_recipient.insert(recipient.to_string(), hex).is_some() {
                return Err(CliError::Usage(format!("--accept names {recipient} twice")));
            }
        }
        Ok(Acceptance {
            by_recipient,
            all_new,
        })
    }

    /// The `--accept` items naming none of `listed` (a typo, or a recipient this command does
    /// not wrap to), to warn about: a person must not believe they accepted something.
    pub fn unused(&self, listed: &[RecipientView]) -> Vec<String> {
        self.by_recipient
            .keys()
            .filter(|r| !listed.iter().any(|l| &l.recipient == *r))
            .cloned()
            .collect()
    }

    fn covers(&self, recipient: &str, fingerprint_hex: &str) -> bool {
        self.by_recipient
            .get(recipient)
            .is_some_and(|pin| fingerprint_hex.starts_with(pin.as_str()))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    format: String,
    version: u32,
    org_id: String,
    recipients: BTreeMap<String, Pin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pin {
    /// Its name when pinned (for people reading the file).
    name: String,
    /// The full fingerprint (64 hex digits).
    fingerprint: String,
}

/// How a listed recipient stands against the pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Pinned with this key.
    Known,
    /// Not pinned yet, and accepted.
    AcceptedNew,
    /// Pinned with another key, and the new one accepted.
    AcceptedChange,
}

/// The pins of one organisation's recipients, as kept beside one custodian key file.
#[derive(Debug)]
pub struct KnownRecipients {
    path: PathBuf,
    org_id: String,
    pins: BTreeMap<String, Pin>,
}

impl KnownRecipients {
    /// Where the pins of `key_file` live.
    pub fn path_for(key_file: &Path) -> PathBuf {
        let mut name = key_file.as_os_str().to_owned();
        name.push(".recipients");
        PathBuf::from(name)
    }

    /// Reads the pins kept beside `key_file` (none yet: empty).
    pub fn load(key_file: &Path, org_id: &str) -> Result<KnownRecipients, CliError> {
        let path = Self::path_for(key_file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(KnownRecipients {
                    path,
                    org_id: org_id.to_string(),
                    pins: BTreeMap::new(),
                });
            }
            Err(e) => {
                return Err(CliError::Usage(format!(
                    "cannot read the pinned recipients {}: {e}",
                    path.display()
                )));
            }
        };
        let body: FileBody = serde_json::from_str(&text).map_err(|e| {
            CliError::Usage(format!(
                "the pinned recipients file {} is not valid ({e}); restore it from a backup (deleting it means accepting every recipient again)",
                path.display()
            ))
        })?;
        if body.format != FORMAT || body.version != 1 {
            return Err(CliError::Usage(format!(
                "{} is not a pinned recipients file of this version",
                path.display()
            )));
        }
        if body.org_id != org_id {
            return Err(CliError::Usage(format!(
                "the pinned recipients {} belong to organisation {}, not {}",
                path.display(),
                body.org_id,
                org_id
            )));
        }
        Ok(KnownRecipients {
            path,
            org_id: body.org_id,
            pins: body.recipients,
        })
    }

    /// Sorts `listed` against the pins; refuses (naming every recipient that needs a person's
    /// check, with its fingerprint) unless each is known or accepted.
    pub fn vet(
        &self,
        listed: &[RecipientView],
        accept: &Acceptance,
        me: &CustodianKey,
    ) -> Result<Vec<Standing>, CliError> {
        let mine = format!("custodian:{}", me.custodian_id);
        let my_key = me.key.public_key().to_base64();
        let mut standings = Vec::with_capacity(listed.len());
        let mut unaccepted = Vec::new();
        for r in listed {
            let fp = flowlink_proto::sealed::key_fingerprint_hex(&r.public_key);
            if r.recipient == mine {
                if r.public_key.trim() != my_key {
                    return Err(CliError::Usage(format!(
                        "the control plane lists your own custodian recipient ({mine}) with key SHA256:{} instead of your key file's SHA256:{}; nothing was wrapped (the control plane's data was changed)",
                        &fp[..16],
                        &flowlink_proto::sealed::key_fingerprint_hex(&my_key)[..16]
                    )));
                }
                standings.push(Standing::Known);
                continue;
            }
            let standing = match self.pins.get(&r.recipient) {
                Some(pin) if pin.fingerprint == fp => Some(Standing::Known),
                Some(_) if accept.covers(&r.recipient, &fp) => Some(Standing::AcceptedChange),
                None if accept.all_new || accept.covers(&r.recipient, &fp) => {
                    Some(Standing::AcceptedNew)
                }
                Some(pin) => {
                    unaccepted.push(format!(
                        "  {} {} ({}): key CHANGED from SHA256:{} to SHA256:{}",
                        r.kind,
                        r.name,
                        r.recipient,
                        &pin.fingerprint[..16],
                        &fp[..16]
                    ));
                    None
                }
                None => {
                    unaccepted.push(format!(
                        "  {} {} ({}): new, key SHA256:{}",
                        r.kind,
                        r.name,
                        r.recipient,
                        &fp[..16]
                    ));
                    None
                }
            };
            if let Some(s) = standing {
                standings.push(s);
            }
        }
        if unaccepted.is_empty() {
            return Ok(standings);
        }
        Err(CliError::Usage(format!(
            "nothing was wrapped: the organisation key would go to recipients you have not accepted:\n{}\n\
             Check each fingerprint where the key lives (`flowlink-proxy status` on a device shows `device key`; a custodian's `secrets custodian init` printed theirs), then run again with `--accept RECIPIENT=FINGERPRINT` for each (or `--accept-new` to trust every new one; a changed key is only accepted by its fingerprint).\n\
             Pins are kept in {}",
            unaccepted.join("\n"),
            self.path.display()
        )))
    }

    /// Pins `wrapped` (after the control plane accepted the wraps) and writes the file (0600,
    /// replaced atomically).
    pub fn pin_and_save(&mut self, wrapped: &[RecipientView]) -> Result<(), CliError> {
        for r in wrapped {
            self.pins.insert(
                r.recipient.clone(),
                Pin {
                    name: r.name.clone(),
                    fingerprint: flowlink_proto::sealed::key_fingerprint_hex(&r.public_key),
                },
            );
        }
        let body = FileBody {
            format: FORMAT.to_string(),
            version: 1,
            org_id: self.org_id.clone(),
            recipients: self.pins.clone(),
        };
        let text = serde_json::to_string_pretty(&body)
            .map_err(|e| CliError::Usage(format!("cannot encode the pinned recipients: {e}")))?;
        let io = |e: std::io::Error| {
            CliError::Usage(format!(
                "the wraps were stored, but the pinned recipients {} could not be written ({e}); the next command will ask you to accept them again",
                self.path.display()
            ))
        };
        let tmp = {
            let mut name = self.path.as_os_str().to_owned();
            name.push(".tmp");
            PathBuf::from(name)
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowlink_proto::sealed::OrgSecretKey;

    fn recipient(kind: &str, id: &str, key: &OrgSecretKey) -> RecipientView {
        RecipientView {
            recipient: format!("{kind}:{id}"),
            kind: kind.into(),
            id: id.into(),
            name: format!("{id} name"),
            public_key: key.public_key().to_base64(),
        }
    }

    fn me() -> CustodianKey {
        CustodianKey {
            server: "https://cp.test".into(),
            org_id: "org-1".into(),
            custodian_id: "me".into(),
            key: OrgSecretKey::generate(),
        }
    }

    #[test]
    fn new_and_changed_recipients_need_a_person_and_pins_survive_a_reload() {
        let dir = tempfile::tempdir().expect("dir");
        let key_file = dir.path().join("custodian.key");
        let me = me();
        let own = recipient("custodian", "me", &me.key);
        let laptop_key = OrgSecretKey::generate();
        let laptop = recipient("device", "laptop", &laptop_key);
        let fp = laptop_key.public_key().fingerprint();

        let mut known = KnownRecipients::load(&key_file, "org-1").expect("empty");
        let refused = known
            .vet(&[own.clone(), laptop.clone()], &Acceptance::default(), &me)
            .expect_err("a new device needs a person")
            .to_string();
        assert!(
            refused.contains("device:laptop") && refused.contains(&fp) && refused.contains("new"),
            "{refused}"
        );
        // Accepted by its printed fingerprint, or by --accept-new.
        let by_fp = Acceptance::parse(&[format!("device:laptop={fp}")], false).expect("parse");
        assert_eq!(
            known
                .vet(&[own.clone(), laptop.clone()], &by_fp, &me)
                .expect("accepted"),
            vec![Standing::Known, Standing::AcceptedNew]
        );
        let wrong = Acceptance::parse(&["device:laptop=SHA256:0000000000000000".into()], false)
            .expect("parse");
        assert!(
            known
                .vet(std::slice::from_ref(&laptop), &wrong, &me)
                .is_err()
        );
        let tofu = Acceptance::parse(&[], true).expect("parse");
        assert!(known.vet(std::slice::from_ref(&laptop), &tofu, &me).is_ok());
        known
            .pin_and_save(&[own.clone(), laptop.clone()])
            .expect("save");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = KnownRecipients::path_for(&key_file);
            let mode = std::fs::metadata(&path).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // Reloaded: the laptop is known; the same id with another key is a change that
        // --accept-new does not cover.
        let known = KnownRecipients::load(&key_file, "org-1").expect("load");
        assert_eq!(
            known
                .vet(std::slice::from_ref(&laptop), &Acceptance::default(), &me)
                .expect("known"),
            vec![Standing::Known]
        );
        let swapped_key = OrgSecretKey::generate();
        let swapped = recipient("device", "laptop", &swapped_key);
        let refused = known
            .vet(std::slice::from_ref(&swapped), &tofu, &me)
            .expect_err("a changed key")
            .to_string();
        assert!(refused.contains("CHANGED"), "{refused}");
        let new_fp = swapped_key.public_key().fingerprint();
        let accept = Acceptance::parse(&[format!("device:laptop={new_fp}")], false).expect("parse");
        assert_eq!(
            known.vet(&[swapped], &accept, &me).expect("accepted"),
            vec![Standing::AcceptedChange]
        );

        // An --accept that names nobody listed is reported.
        assert_eq!(
            accept.unused(std::slice::from_ref(&laptop)),
            Vec::<String>::new()
        );
        assert_eq!(accept.unused(&[]), vec!["device:laptop".to_string()]);

        // Another organisation's pins are not used.
        let err = KnownRecipients::load(&key_file, "org-2").expect_err("other org");
        assert!(err.to_string().contains("org-1"), "{err}");
    }

    #[test]
    fn the_custodians_own_recipient_must_carry_the_key_files_key() {
        let dir = tempfile::tempdir().expect("dir");
        let me = me();
        let known = KnownRecipients::load(&dir.path().join("k"), "org-1").expect("empty");
        let forged = recipient("custodian", "me", &OrgSecretKey::generate());
        let tofu = Acceptance::parse(&[], true).expect("parse");
        let err = known
            .vet(&[forged], &tofu, &me)
            .expect_err("not my key")
            .to_string();
        assert!(err.contains("your own custodian recipient"), "{err}");
    }

    #[test]
    fn accept_items_are_checked() {
        for bad in [
            "laptop=SHA256:0123456789abcdef",
            "device:=SHA256:0123456789abcdef",
            "device:x=SHA256:0123",
            "device:x",
            "device:x=SHA256:0123456789abcdeg",
        ] {
            let e = Acceptance::parse(&[bad.into()], false).expect_err(bad);
            assert!(e.to_string().contains("RECIPIENT=FINGERPRINT"), "{e}");
        }
        let twice = Acceptance::parse(
            &[
                "device:x=SHA256:0123456789abcdef".into(),
                "device:x=0123456789abcdef".into(),
            ],
            false,
        )
        .expect_err("twice");
        assert!(twice.to_string().contains("twice"), "{twice}");
    }
}
