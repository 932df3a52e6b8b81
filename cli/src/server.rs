//! Which server a command talks to, and with which token: the flags and variables, else the
//! stack `centaur dev` runs for this CENTAUR_HOME, else the last `centaur login`.

use std::path::PathBuf;

use centaur_client::{Client, credentials};

/// No server is named and none can be found.
#[derive(Debug, thiserror::Error)]
pub enum NoServer {
    /// This CENTAUR_HOME had a `centaur dev` stack, and it does not run now.
    #[error("no stack runs for {}: start it with `centaur dev`", .0.display())]
    StackDown(PathBuf),
    /// No stack was ever prepared here, and no login was saved.
    #[error(
        "no Centaur server to talk to: start one on this machine with `centaur dev`, or log in to one with `centaur login` (or set CENTAUR_API_URL)"
    )]
    Nowhere,
}

/// The server as the flags and variables name it.
pub struct Server {
    pub url: Option<String>,
    pub token: Option<String>,
}

/// A client for the API, and whether the server is this home's `centaur dev` stack.
pub struct Connection {
    pub client: Client,
    pub dev_stack: bool,
}

impl Server {
    /// The URL to log in to or out of: the flag, else the running stack's, else the last
    /// login's, else the default.
    pub fn login_url(&self) -> String {
        let stack = centaur_cli::dev::running_stack();
        let url = self
            .url
            .clone()
            .or_else(|| stack.map(|(url, _)| url))
            .or_else(credentials::saved_url)
            .unwrap_or_else(|| credentials::DEFAULT_API_URL.to_owned());
        url.trim_end_matches('/').to_owned()
    }

    /// A client for the API, with its token.
    pub fn connect(self) -> Result<Connection, crate::error::CliError> {
        let stack = centaur_cli::dev::running_stack();
        let url = match (self.url, &stack, credentials::saved_url()) {
            (Some(url), _, _) => url,
            (None, Some((url, _)), _) => url.clone(),
            (None, None, Some(saved)) => saved,
            (None, None, None) => match centaur_cli::dev::prepared_home() {
                Some(home) => return Err(NoServer::StackDown(home).into()),
                None if self.token.is_some() => credentials::DEFAULT_API_URL.to_owned(),
                None => return Err(NoServer::Nowhere.into()),
            },
        };
        let url = url.trim_end_matches('/').to_owned();
        let stack = stack.filter(|(stack_url, _)| *stack_url == url);
        let dev_stack = stack.is_some();
        let token = match self.token.or(stack.map(|(_, token)| token)) {
            Some(token) => token,
            None => credentials::load(&url)?,
        };
        Ok(Connection {
            client: Client::new(url, token),
            dev_stack,
        })
    }
}
