//! Phase 1's decisions: which credentials a request carries, whether they are good, and which
//! backend user the gateway substitutes for them.

use super::*;

/// A successful authentication, and what it lets the connection do.
pub(super) struct Granted {
    pub(super) grant: Grant,
    /// The backend user to substitute.
    pub(super) user: BackendUser,
}

impl Granted {
    /// What the tracker applies when Redis accepts the substituted request.
    pub(super) fn switch(&self, hello: bool, proto: Option<u8>) -> Switch {
        Switch {
            grant: self.grant.clone(),
            user: self.user.name.clone(),
            hello,
            proto,
        }
    }

    /// One debug line: who got in, as which backend user, until when. Never the credential.
    pub(super) fn log(&self, conn: u64, what: &str) {
        match &self.grant {
            Grant::Token(token) => debug!(
                conn,
                oid = %token.oid,
                policy = token.policy.name(),
                exp = token.exp,
                "{what}"
            ),
            Grant::AccessKey { .. } => {
                debug!(conn, user = %self.user.name, "{what} with an access key")
            }
        }
    }
}

/// A successful authentication.
pub(super) struct Authenticated {
    /// What to send the backend in place of the client's request.
    pub(super) command: Vec<u8>,
    pub(super) granted: Granted,
    /// The protocol the client asked for (`HELLO`), if it did.
    pub(super) proto: Option<u8>,
}

/// What phase 1 does with a request.
pub(super) enum Local {
    Reply(Cow<'static, [u8]>),
    /// The request must be read again once the identity's backend user exists.
    NeedsUser(String, AccessPolicy),
    Nothing,
    Quit,
    Authenticated(Authenticated),
}

/// What a connection needs from the gateway.
pub(super) struct Ctx<'a> {
    pub(super) id: u64,
    pub(super) state: &'a GatewayState,
    /// An identity whose backend user could not be created just now.
    pub(super) failed_creation: Mutex<Option<String>>,
    /// Refused `AUTH`s so far (bounded by [`MAX_FAILED_AUTH_PER_CONNECTION`]).
    pub(super) failures: AtomicU32,
}

/// Why an authentication cannot be substituted.
pub(super) enum Refused {
    /// Bad credentials (or no backend user to be had): `WRONGPASS`.
    Invalid,
    /// A valid token whose identity has no backend user yet: create it, then read the request
    /// again.
    NeedsUser(String, AccessPolicy),
}

impl Ctx<'_> {
    /// Checks `AUTH <user> <password>`: an access key when the user is `default`, else a
    /// token; finds the backend user to substitute.
    ///
    /// On an authenticated connection (a re-`AUTH`): the signature is checked on this thread,
    /// where the verified-token memory makes a fleet's re-`AUTH` with one token cheap.
    pub(super) fn authenticate(&self, user: &[u8], password: &[u8]) -> Result<Granted, Refused> {
        if user == b"default" {
            return self.authenticate_key(password);
        }
        if self.too_many_failures() {
            return Err(Refused::Invalid);
        }
        self.grant(self.state.validator.validate(user, password))
    }

    /// As [`authenticate`](Self::authenticate), before authentication: the RSA verification
    /// runs off the runtime threads, a bounded number at a time ([`TokenValidator::check`]).
    pub(super) async fn authenticate_checked(
        &self,
        user: &[u8],
        password: &[u8],
    ) -> Result<Granted, Refused> {
        if user == b"default" {
            return self.authenticate_key(password);
        }
        if self.too_many_failures() {
            return Err(Refused::Invalid);
        }
        self.grant(self.state.validator.check(user, password).await)
    }

    /// The backend user for a checked token.
    pub(super) fn grant(&self, checked: Result<ValidToken, Rejection>) -> Result<Granted, Refused> {
        match checked {
            Ok(valid) => match self.state.backend.identity_user(&valid.oid, &valid.policy) {
                Some(backend_user) => Ok(Granted {
                    grant: Grant::Token(valid),
                    user: backend_user,
                }),
                None if self.take_failed_creation(&valid.oid) => {
                    debug!(
                        conn = self.id,
                        policy = valid.policy.name(),
                        "AUTH refused: the backend user of the identity could not be created"
                    );
                    self.state.stats.refused("backend_user");
                    Err(Refused::Invalid)
                }
                None => Err(Refused::NeedsUser(valid.oid, valid.policy)),
            },
            Err(rejection) => {
                self.refused(&rejection, "token");
                Err(Refused::Invalid)
            }
        }
    }

    /// Creates (or updates) the identity's backend user; on failure the next
    /// [`authenticate`](Self::authenticate) of that identity refuses it.
    pub(super) async fn create_user(&self, oid: String, policy: AccessPolicy) {
        if let Err(e) = self.state.backend.ensure_identity(&oid, &policy).await {
            debug!(conn = self.id, error = %e, "could not create the identity's backend user");
            *self
                .failed_creation
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(oid);
        }
    }

    pub(super) fn take_failed_creation(&self, oid: &str) -> bool {
        let mut failed = self
            .failed_creation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if failed.as_deref() == Some(oid) {
            *failed = None;
            true
        } else {
            false
        }
    }

    /// Checks an access key (`AUTH <key>`, `AUTH default <key>`).
    pub(super) fn authenticate_key(&self, key: &[u8]) -> Result<Granted, Refused> {
        if self.too_many_failures() {
            return Err(Refused::Invalid);
        }
        match self.state.directory.access_keys().check(key) {
            Ok(epoch) => Ok(Granted {
                grant: Grant::AccessKey { epoch },
                user: self.state.backend.access_key_user(),
            }),
            Err(rejection) => {
                self.refused(&rejection.into(), "access_key");
                Err(Refused::Invalid)
            }
        }
    }

    /// Whether the re-AUTH fault is on ([`Faults::set_refuse_reauth`]); counts the refusal.
    ///
    /// [`Faults::set_refuse_reauth`]: crate::faults::Faults::set_refuse_reauth
    pub(super) fn reauth_refused(&self) -> bool {
        let refused = self.state.faults.refuse_reauth();
        if refused {
            debug!(
                conn = self.id,
                "re-AUTH refused: the refuse-reauth fault is on"
            );
            self.state.stats.refused("fault_refuse_reauth");
        }
        refused
    }

    pub(super) fn refused(&self, rejection: &Rejection, what: &'static str) {
        debug!(conn = self.id, reason = %rejection, "AUTH refused");
        self.state.stats.refused(what);
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the connection used up its refused `AUTH`s: further ones are refused unchecked
    /// (and, before authentication, the connection is closed).
    pub(super) fn too_many_failures(&self) -> bool {
        let failed = self.failures.load(Ordering::Relaxed) >= MAX_FAILED_AUTH_PER_CONNECTION;
        if failed {
            debug!(
                conn = self.id,
                "AUTH refused unchecked: too many refused AUTHs on this connection"
            );
            self.state.stats.refused("too_many_failures");
        }
        failed
    }

    /// Phase 1: answers a request of an unauthenticated client.
    pub(super) async fn local(
        &self,
        frame: &Frame,
        bytes: &[u8],
        commands: Option<&CommandArities>,
    ) -> Local {
        let Some(name) = frame.name(bytes) else {
            return Local::Nothing;
        };
        match classify(name) {
            Some(Cmd::Auth) => {
                let args = frame.args(bytes);
                match args.len() {
                    0 | 1 => Local::Reply(Cow::Borrowed(AUTH_ARITY)),
                    2 | 3 => {
                        let granted = match args.len() {
                            2 => self.authenticate_key(&args[1]),
                            _ => self.authenticate_checked(&args[1], &args[2]).await,
                        };
                        match granted {
                            Ok(granted) => Local::Authenticated(Authenticated {
                                command: auth_command(&granted.user),
                                granted,
                                proto: None,
                            }),
                            Err(Refused::Invalid) => Local::Reply(Cow::Borrowed(WRONGPASS)),
                            Err(Refused::NeedsUser(oid, policy)) => Local::NeedsUser(oid, policy),
                        }
                    }
                    _ => Local::Reply(Cow::Borrowed(SYNTAX_ERROR)),
                }
            }
            Some(Cmd::Hello) => {
                let args = frame.args(bytes);
                match parse_hello(&args) {
                    Err(e) => Local::Reply(Cow::Owned(e.reply())),
                    Ok(Hello { auth: None, .. }) => Local::Reply(Cow::Borrowed(NOAUTH_HELLO)),
                    Ok(hello) => {
                        let Some((user, token)) = hello.auth else {
                            return Local::Reply(Cow::Borrowed(NOAUTH_HELLO));
                        };
                        match self.authenticate_checked(user, token).await {
                            Ok(granted) => Local::Authenticated(Authenticated {
                                command: hello.with_credentials(
                                    granted.user.name.as_bytes(),
                                    granted.user.password.as_bytes(),
                                ),
                                granted,
                                proto: hello.version,
                            }),
                            Err(Refused::Invalid) => Local::Reply(Cow::Borrowed(WRONGPASS)),
                            Err(Refused::NeedsUser(oid, policy)) => Local::NeedsUser(oid, policy),
                        }
                    }
                }
            }
            Some(Cmd::Reset) => Local::Reply(Cow::Borrowed(RESET)),
            _ if name.eq_ignore_ascii_case(b"QUIT") => Local::Quit,
            // Redis reports an unknown command or a wrong argument count before `NOAUTH`.
            _ => match commands.and_then(|t| rejection(t, &frame.args(bytes))) {
                Some(reply) => Local::Reply(Cow::Owned(reply)),
                None => Local::Reply(Cow::Borrowed(NOAUTH)),
            },
        }
    }
}
