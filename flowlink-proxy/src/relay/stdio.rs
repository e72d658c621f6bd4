//! The proxy's own stdin and stdout, as the client side of the relay.
//!
//! Editors connect MCP servers through pipes. tokio's `stdin()`/`stdout()` hand every read and
//! write to a blocking thread pool, which costs a thread hand-off per message; for pipes the
//! relay uses non-blocking pipe ends driven by the reactor instead. Anything else (a terminal,
//! a file) keeps the portable path, because making a terminal non-blocking would affect the
//! shell that shares it.

use std::os::fd::AsFd;

use tokio::io::{AsyncRead, AsyncWrite};

/// The client's side of the relay.
pub type ClientIn = Box<dyn AsyncRead + Unpin + Send>;
/// Where the relay writes to the client.
pub type ClientOut = Box<dyn AsyncWrite + Unpin + Send>;

/// The proxy's stdin and stdout; must be called inside a tokio runtime.
pub fn client_stdio() -> (ClientIn, ClientOut) {
    let input: ClientIn = match std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok())
    {
        Some(pipe) => Box::new(pipe),
        None => Box::new(tokio::io::stdin()),
    };
    let output: ClientOut = match std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok())
    {
        Some(pipe) => Box::new(pipe),
        None => Box::new(tokio::io::stdout()),
    };
    (input, output)
}
