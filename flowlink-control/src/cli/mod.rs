//! Command-line clients of the control plane's API that run on an admin's machine (not on the
//! server): `flowlink-control secrets …` ([`secrets`]) with its custodian key file
//! ([`keyfile`]). Secret values and private keys are handled here, in memory, and never sent,
//! printed or logged; only sealed boxes and public keys reach the server.

pub mod keyfile;
pub mod recipients;
pub mod secrets;
