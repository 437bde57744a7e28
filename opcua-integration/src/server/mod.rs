//! The OPC UA server over `opc.tcp`: listener, channel-id registry and the discovery services.
//!
//! Client certificates are judged by a [`PkiStore`] ([`ServerBuilder::pki`]); a server with secured endpoints and
//! no trust decision does not start. At start the server's own certificate is checked against its vault key, its
//! ApplicationUri, the endpoint host and every secured policy it offers, so a misconfiguration is a start-up error
//! rather than a refusal at every client.
//!
//! ```no_run
//! # async fn demo(key: certvault::SharedKey, chain: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
//! use certvault_opcua::pki::PkiStore;
//! use certvault_opcua::server::ServerBuilder;
//!
//! let pki = Arc::new(PkiStore::create_or_open("/var/lib/example/pki")?);
//! let server = ServerBuilder::new("opc.tcp://127.0.0.1:0/")
//!     .application_uri("urn:example:server")
//!     .identity(key, chain)?
//!     .pki(pki)
//!     .endpoint(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt)
//!     .start()
//!     .await?;
//! println!("listening on {}", server.endpoint_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod access;
pub mod address_space;
pub mod config;
pub mod discovery;
pub mod identity_slot;
pub mod push;
pub mod registry;
pub mod services;
pub mod session;
pub mod standard_services;
pub mod subscriptions;
pub mod user_token;
pub mod users;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certvault::SharedKey;
use opcua_types::EndpointDescription;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::channel::asymmetric::LocalIdentity;
use crate::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use crate::channel::secure_channel::{AcceptAnyCertificate, CertificateValidator, ServerConfig as ChannelConfig};
use crate::error::{Error, Result};
use crate::pki::{
    check_own_certificate, limits_for, CertificateRefusal, PkiStore, Role, StoreValidator, ValidationOptions,
};
use crate::transport::connection::{ConnectionConfig, ServerConnection, DEFAULT_HELLO_TIMEOUT};
use crate::transport::tcp::{connection_span, serve_connection};
use crate::transport::uacp::Limits;
use crate::transport::url::OpcTcpUrl;

pub use address_space::{AddressSpace, AddressSpaceLimits, SharedAddressSpace};
pub use discovery::{ApplicationInfo, Discovery};
pub use registry::ChannelRegistry;
pub use services::{NoSessionServices, Services, SessionServices};
pub use session::{SessionLimits, SessionManager};
pub use standard_services::StandardServices;
pub use subscriptions::SubscriptionLimits;
pub use user_token::{Authenticator, UserTokenKinds};
pub use users::UserDatabase;

/// Everything a server is configured with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The endpoint URL clients use. A port of 0 is replaced by the port the listener got.
    pub endpoint_url: String,
    /// Where to listen; by default the URL's port on 127.0.0.1.
    pub bind_address: Option<SocketAddr>,
    /// ApplicationUri, ProductUri and name.
    pub application: ApplicationInfo,
    /// Our certificate chain and vault key (needed by every secured endpoint).
    pub identity: Option<LocalIdentity>,
    /// The (policy, mode) pairs offered.
    pub endpoints: Vec<(SecurityPolicy, SecurityMode)>,
    /// Policy None may be offered only when this is set: it is for tests and closed networks.
    pub allow_security_none: bool,
    /// Whether the deprecated SHA-1 policies may be offered.
    pub deprecated: DeprecatedPolicies,
    /// Transport limits.
    pub limits: Limits,
    /// How long a connection may stay silent before its Hello.
    pub hello_timeout: Duration,
    /// Shortest token lifetime granted, in milliseconds.
    pub min_token_lifetime_ms: u32,
    /// Longest token lifetime granted, in milliseconds.
    pub max_token_lifetime_ms: u32,
    /// The trust store that judges client certificates (with [`Role::Client`]). Secured endpoints need this or
    /// [`ServerConfig::validator`], not both.
    pub pki: Option<Arc<PkiStore>>,
    /// Suppressed validation checks for client certificates (all off by default).
    pub validation: ValidationOptions,
    /// A trust decision of the caller's own instead of the PKI store (tests: [`AcceptAnyCertificate`]).
    pub validator: Option<Arc<dyn CertificateValidator>>,
    /// Session limits.
    pub sessions: SessionLimits,
    /// The user token kinds offered.
    pub user_tokens: UserTokenKinds,
    /// Users, passwords and user certificate roles.
    pub users: Arc<UserDatabase>,
    /// The trust list of user certificates (X.509 user tokens need it).
    pub user_pki: Option<Arc<PkiStore>>,
    /// The address space served (namespace 0 and the application's nodes). `None`: namespace 0 only.
    pub address_space: Option<SharedAddressSpace>,
    /// Subscription limits.
    pub subscriptions: SubscriptionLimits,
    /// Services for activated sessions of the caller's own instead of [`StandardServices`] over the address space.
    pub session_services: Option<Arc<dyn SessionServices>>,
    /// GDS push (ServerConfiguration methods and the TrustList); needs a PKI store and an identity.
    pub push: Option<push::PushConfig>,
}

/// Builds a [`ServerConfig`] and starts the server.
#[derive(Debug)]
pub struct ServerBuilder {
    config: ServerConfig,
}

impl ServerBuilder {
    /// A server at `endpoint_url` with no endpoints yet, default limits, a 10 s hello timeout, token lifetimes of
    /// 10 s to 1 h, and no trust decision yet: secured endpoints need [`ServerBuilder::pki`] (or, in tests,
    /// [`ServerBuilder::accept_any_certificate`]).
    pub fn new(endpoint_url: impl Into<String>) -> Self {
        ServerBuilder {
            config: ServerConfig {
                endpoint_url: endpoint_url.into(),
                bind_address: None,
                application: ApplicationInfo {
                    application_uri: "urn:certvault:server".into(),
                    product_uri: "urn:certvault".into(),
                    application_name: "certvault OPC UA server".into(),
                },
                identity: None,
                endpoints: Vec::new(),
                allow_security_none: false,
                deprecated: DeprecatedPolicies::Reject,
                limits: Limits::default(),
                hello_timeout: DEFAULT_HELLO_TIMEOUT,
                min_token_lifetime_ms: 10_000,
                max_token_lifetime_ms: 3_600_000,
                pki: None,
                validation: ValidationOptions::default(),
                validator: None,
                sessions: SessionLimits::default(),
                user_tokens: UserTokenKinds::default(),
                users: Arc::new(UserDatabase::empty()),
                user_pki: None,
                address_space: None,
                subscriptions: SubscriptionLimits::default(),
                session_services: None,
                push: None,
            },
        }
    }

    /// Starts from a whole configuration.
    pub fn from_config(config: ServerConfig) -> Self {
        ServerBuilder { config }
    }

    /// Sets the ApplicationUri.
    pub fn application_uri(mut self, uri: impl Into<String>) -> Self {
        self.config.application.application_uri = uri.into();
        self
    }

    /// Sets the ProductUri.
    pub fn product_uri(mut self, uri: impl Into<String>) -> Self {
        self.config.application.product_uri = uri.into();
        self
    }

    /// Sets the application name.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.config.application.application_name = name.into();
        self
    }

    /// Our vault key and the certificate chain (DER leaf first, then issuers, concatenated) that certifies it.
    pub fn identity(mut self, key: SharedKey, certificate_chain: Vec<u8>) -> Result<Self> {
        self.config.identity = Some(LocalIdentity::new(key, certificate_chain)?);
        Ok(self)
    }

    /// Offers `policy` with `mode`.
    pub fn endpoint(mut self, policy: SecurityPolicy, mode: SecurityMode) -> Self {
        if !self.config.endpoints.contains(&(policy, mode)) {
            self.config.endpoints.push((policy, mode));
        }
        self
    }

    /// Offers every non-deprecated policy with Sign and with SignAndEncrypt.
    pub fn secure_endpoints(mut self) -> Self {
        for policy in
            [SecurityPolicy::Basic256Sha256, SecurityPolicy::Aes128Sha256RsaOaep, SecurityPolicy::Aes256Sha256RsaPss]
        {
            for mode in [SecurityMode::Sign, SecurityMode::SignAndEncrypt] {
                self = self.endpoint(policy, mode);
            }
        }
        self
    }

    /// Allows (and offers) policy None. Only for tests and isolated networks: Part 2 wants it off by default.
    pub fn allow_security_none(mut self) -> Self {
        self.config.allow_security_none = true;
        self.endpoint(SecurityPolicy::None, SecurityMode::None)
    }

    /// Where to listen (default: 127.0.0.1 and the URL's port).
    pub fn bind(mut self, address: SocketAddr) -> Self {
        self.config.bind_address = Some(address);
        self
    }

    /// Transport limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// How long a new connection may stay silent before its Hello.
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.config.hello_timeout = timeout;
        self
    }

    /// Bounds of the token lifetimes granted, in milliseconds.
    pub fn token_lifetime_ms(mut self, min: u32, max: u32) -> Self {
        self.config.min_token_lifetime_ms = min;
        self.config.max_token_lifetime_ms = max.max(min);
        self
    }

    /// Judges client certificates with `store` (Part 4 §6.1.3, role Client): untrusted certificates are refused
    /// and copied to its rejected/certs, and trust changes in its folders apply to the next channel. Replaces a
    /// validator set before.
    pub fn pki(mut self, store: Arc<PkiStore>) -> Self {
        self.config.pki = Some(store);
        self.config.validator = None;
        self
    }

    /// Suppresses validation checks of client certificates (see [`ValidationOptions`]; all off by default).
    pub fn validation_options(mut self, options: ValidationOptions) -> Self {
        self.config.validation = options;
        self
    }

    /// A trust decision of the caller's own instead of a PKI store. Replaces a PKI store set before.
    pub fn validator(mut self, validator: Arc<dyn CertificateValidator>) -> Self {
        self.config.validator = Some(validator);
        self.config.pki = None;
        self
    }

    /// Trusts every client certificate. Only for tests: it must be asked for, never a default.
    pub fn accept_any_certificate(self) -> Self {
        self.validator(Arc::new(AcceptAnyCertificate))
    }

    /// Session limits.
    pub fn session_limits(mut self, limits: SessionLimits) -> Self {
        self.config.sessions = limits;
        self
    }

    /// The users file (passwords, roles, user certificate roles). Enables user name tokens.
    pub fn users(mut self, users: UserDatabase) -> Self {
        self.config.users = Arc::new(users);
        self.config.user_tokens.username = true;
        self
    }

    /// The trust list of user certificates. Enables X.509 user tokens.
    pub fn user_pki(mut self, store: Arc<PkiStore>) -> Self {
        self.config.user_pki = Some(store);
        self.config.user_tokens.x509 = true;
        self
    }

    /// Which user tokens are offered (after [`ServerBuilder::users`] and [`ServerBuilder::user_pki`], to turn
    /// kinds off again, e.g. anonymous).
    pub fn user_tokens(mut self, kinds: UserTokenKinds) -> Self {
        self.config.user_tokens = kinds;
        self
    }

    /// The address space to serve, built with [`address_space::AddressSpace`]'s builder API. Without one the
    /// server serves namespace 0 only.
    pub fn address_space(mut self, space: SharedAddressSpace) -> Self {
        self.config.address_space = Some(space);
        self
    }

    /// Subscription limits.
    pub fn subscription_limits(mut self, limits: SubscriptionLimits) -> Self {
        self.config.subscriptions = limits;
        self
    }

    /// Services for activated sessions of the caller's own, instead of the standard services over the address
    /// space.
    pub fn session_services(mut self, services: Arc<dyn SessionServices>) -> Self {
        self.config.session_services = Some(services);
        self
    }

    /// Enables GDS push (Part 12 §7.7): the ServerConfiguration methods renew the certificate with keys made in
    /// `push.key_store`, and the DefaultApplicationGroup TrustList edits the PKI store. Administrators over
    /// SignAndEncrypt only.
    pub fn push(mut self, push: push::PushConfig) -> Self {
        self.config.push = Some(push);
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Checks the configuration, binds and starts accepting.
    pub async fn start(self) -> Result<Server> {
        Server::start(self.config).await
    }
}

struct Shared {
    config: ServerConfig,
    /// The endpoints plus (None, None): discovery over an unsecured channel is always possible (Part 4 §5.5.1);
    /// the router refuses everything but discovery on such a channel unless None is offered.
    channel_endpoints: Vec<(SecurityPolicy, SecurityMode)>,
    validator: Arc<dyn CertificateValidator>,
    services: Services,
    connection: ConnectionConfig,
    registry: Arc<ChannelRegistry>,
}

/// A running server. Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    endpoint_url: String,
    endpoints: Vec<EndpointDescription>,
    registry: Arc<ChannelRegistry>,
    services: Services,
    address_space: SharedAddressSpace,
    store_validator: Option<Arc<StoreValidator>>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Stops a server from elsewhere (a signal handler, another task).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shutdown: watch::Sender<bool>,
}

impl ShutdownHandle {
    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

fn check(config: &ServerConfig, host: &str) -> Result<()> {
    if config.endpoints.is_empty() {
        return Err(Error::InvalidState("a server needs at least one endpoint"));
    }
    for &(policy, mode) in &config.endpoints {
        mode.check(policy)?;
        if policy.is_none() && !config.allow_security_none {
            return Err(Error::SecurityPolicyRejected("policy None must be enabled explicitly".into()));
        }
        if policy.is_deprecated() && config.deprecated != DeprecatedPolicies::Allow {
            return Err(Error::SecurityPolicyRejected(format!("{policy} is deprecated and not enabled")));
        }
        if !policy.is_none() {
            let identity = config
                .identity
                .as_ref()
                .ok_or(Error::InvalidState("secured endpoints need the server's certificate and key"))?;
            if let certvault::KeyAlgorithm::Rsa { bits } = identity.key_algorithm() {
                policy.check_key_bits(bits)?;
            }
            check_own_certificate(
                identity.certificate(),
                &identity.key().info().spki_der,
                &config.application.application_uri,
                &[host],
                Role::Server,
                &limits_for(policy),
            )
            .map_err(|source| Error::OwnCertificate { policy: policy.name(), source })?;
        }
    }
    Ok(())
}

/// The validator channels use, and the store validator behind it when there is one (for refusal reports).
type TrustDecision = (Arc<dyn CertificateValidator>, Option<Arc<StoreValidator>>);

/// The trust decision on client certificates: the caller's validator, or the PKI store, or none when only policy
/// None is offered (no certificate is ever presented then).
fn trust_decision(config: &ServerConfig) -> Result<TrustDecision> {
    match (&config.validator, &config.pki) {
        (Some(_), Some(_)) => Err(Error::InvalidState("configure either a PKI store or a validator, not both")),
        (Some(validator), None) => Ok((validator.clone(), None)),
        (None, Some(store)) => {
            let validator = Arc::new(StoreValidator::new(store.clone(), Role::Client, config.validation));
            Ok((validator.clone(), Some(validator)))
        }
        (None, None) if config.endpoints.iter().all(|(p, _)| p.is_none()) => Ok((Arc::new(AcceptAnyCertificate), None)),
        (None, None) => Err(Error::InvalidState(
            "secured endpoints need a PKI store (ServerBuilder::pki) to judge client certificates",
        )),
    }
}

impl Server {
    async fn start(config: ServerConfig) -> Result<Server> {
        let url = OpcTcpUrl::parse(&config.endpoint_url)?;
        check(&config, &url.host)?;
        let (validator, store_validator) = trust_decision(&config)?;
        let bind = config.bind_address.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, url.port)));
        let listener = TcpListener::bind(bind).await?;
        let local_addr = listener.local_addr()?;
        let endpoint_url = if url.port == 0 { url.with_port(local_addr.port()) } else { config.endpoint_url.clone() };
        let certificate = config.identity.as_ref().map(|i| i.certificate().to_vec()).unwrap_or_default();
        let discovery =
            Discovery::new(&config.application, &endpoint_url, &certificate, &config.endpoints, config.user_tokens);
        let endpoints = discovery.endpoints().to_vec();
        let authenticator = Authenticator {
            kinds: config.user_tokens,
            users: config.users.clone(),
            user_pki: config.user_pki.clone(),
            identity: config.identity.clone(),
        };
        let space = config.address_space.clone().unwrap_or_else(|| {
            SharedAddressSpace::new(AddressSpace::new(
                &config.application,
                AddressSpaceLimits::default(),
                opcua_types::DateTime::now(),
            ))
        });
        let session_services: Arc<dyn SessionServices> = match &config.session_services {
            Some(custom) => custom.clone(),
            None => StandardServices::start(space.clone(), config.subscriptions.clone()),
        };
        let services = Services::new(
            discovery,
            SessionManager::new(config.sessions),
            authenticator,
            config.identity.clone(),
            session_services,
            config.limits.max_message_size,
            config.endpoints.iter().any(|(p, _)| p.is_none()),
        );
        if let Some(push) = &config.push {
            let pki =
                config.pki.clone().ok_or(Error::InvalidState("GDS push needs a PKI store (ServerBuilder::pki)"))?;
            if config.identity.is_none() {
                return Err(Error::InvalidState("GDS push needs the server's certificate and key"));
            }
            push::install(
                &space,
                push::PushContext {
                    config: push.clone(),
                    services: services.clone(),
                    pki,
                    application_uri: config.application.application_uri.clone(),
                    host: url.host.clone(),
                    policies: config.endpoints.iter().map(|(p, _)| *p).filter(|p| !p.is_none()).collect(),
                },
            )?;
        }
        let mut connection = ConnectionConfig::for_urls([endpoint_url.as_str()])?;
        connection.limits = config.limits;
        connection.hello_timeout = config.hello_timeout;
        let registry = ChannelRegistry::new();
        let mut channel_endpoints = config.endpoints.clone();
        if !channel_endpoints.iter().any(|(p, _)| p.is_none()) {
            channel_endpoints.push((SecurityPolicy::None, SecurityMode::None));
        }
        let shared = Arc::new(Shared {
            config,
            channel_endpoints,
            validator,
            services: services.clone(),
            connection,
            registry: registry.clone(),
        });
        let (shutdown, watcher) = watch::channel(false);
        let span = tracing::info_span!("opcua_server", url = %endpoint_url);
        let task = tokio::spawn(accept_loop(listener, shared, watcher).instrument(span));
        tracing::info!(%endpoint_url, %local_addr, "OPC UA server listening");
        Ok(Server {
            local_addr,
            endpoint_url,
            endpoints,
            registry,
            services,
            address_space: space,
            store_validator,
            shutdown,
            task: Some(task),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The endpoint URL, with the real port.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint_url
    }

    /// The endpoint descriptions GetEndpoints returns.
    pub fn endpoints(&self) -> &[EndpointDescription] {
        &self.endpoints
    }

    /// The endpoint descriptions GetEndpoints returns now: after a GDS push ApplyChanges they carry the new
    /// certificate ([`Server::endpoints`] keeps the ones of the start).
    pub fn current_endpoints(&self) -> Vec<EndpointDescription> {
        self.services.endpoints()
    }

    /// The certificate (DER leaf) new channels are opened with now.
    pub fn current_certificate(&self) -> Option<Vec<u8>> {
        self.services.identity().current().map(|i| i.certificate().to_vec())
    }

    /// How many connections currently hold a channel id.
    pub fn live_connections(&self) -> usize {
        self.registry.live()
    }

    /// The address space served: set process values through it.
    pub fn address_space(&self) -> &SharedAddressSpace {
        &self.address_space
    }

    /// How many sessions exist (activated or not).
    pub fn session_count(&self) -> usize {
        self.services.session_count()
    }

    /// Client certificates refused from now on, with the specific status code the client does not see. `None`
    /// when the server judges certificates with a validator of the caller's instead of a PKI store.
    pub fn certificate_refusals(&self) -> Option<tokio::sync::broadcast::Receiver<CertificateRefusal>> {
        self.store_validator.as_ref().map(|v| v.subscribe())
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { shutdown: self.shutdown.clone() }
    }

    /// Stops accepting, closes every connection, and waits for the listener task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    // Session timeouts are checked once a second: a session lives seconds to hours, so that is precise enough.
    let mut expiry = tokio::time::interval(Duration::from_secs(1));
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = expiry.tick() => {
                shared.services.expire_sessions(crate::channel::secure_channel::Now::system());
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let watcher = shutdown.clone();
                    connections.spawn(
                        async move {
                            let id = shared.registry.allocate();
                            let channel = ChannelConfig {
                                // The identity at accept time: an ApplyChanges later does not touch this channel.
                                identity: shared.services.identity().current(),
                                endpoints: shared.channel_endpoints.clone(),
                                deprecated: shared.config.deprecated,
                                secure_channel_id: id.get(),
                                min_lifetime_ms: shared.config.min_token_lifetime_ms,
                                max_lifetime_ms: shared.config.max_token_lifetime_ms,
                                validator: shared.validator.clone(),
                            };
                            let conn = ServerConnection::new(shared.connection.clone(), channel, Instant::now());
                            tracing::debug!("accepted");
                            match serve_connection(stream, conn, &shared.services, watcher).await {
                                Ok(()) => tracing::debug!("connection ended"),
                                Err(e) => tracing::debug!(error = %e, "connection failed"),
                            }
                            drop(id);
                        }
                        .instrument(connection_span(peer)),
                    );
                }
                // Accept errors (out of file descriptors, a reset before accept) concern one connection, not the
                // listener; back off briefly so a persistent one does not spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow with the server's lifetime.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // Every connection watches the same signal; wait for them to write their last bytes.
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::asymmetric::tests::cached;
    use opcua_types::StatusCode;

    fn builder() -> ServerBuilder {
        let (key, cert) = cached(2048, "server");
        ServerBuilder::new("opc.tcp://localhost:0/")
            .application_uri("urn:certvault:test:server")
            .identity(key, cert)
            .unwrap()
            .endpoint(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt)
    }

    #[tokio::test]
    async fn secured_endpoints_need_a_trust_decision() {
        let err = builder().start().await.unwrap_err();
        assert!(matches!(err, Error::InvalidState(m) if m.contains("PKI store")), "{err}");
        // Policy None alone needs none: no certificate is ever presented.
        let none = ServerBuilder::new("opc.tcp://localhost:0/").allow_security_none().start().await.unwrap();
        none.shutdown().await;
        let dir = tempfile::tempdir().unwrap();
        let both = builder().pki(Arc::new(PkiStore::create_or_open(dir.path()).unwrap()));
        let mut config = both.config().clone();
        config.validator = Some(Arc::new(AcceptAnyCertificate));
        assert!(ServerBuilder::from_config(config).start().await.is_err(), "a PKI store and a validator conflict");
    }

    #[tokio::test]
    async fn a_pki_store_judges_clients_and_reports_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(PkiStore::create_or_open(dir.path()).unwrap());
        let server = builder().pki(store).start().await.unwrap();
        assert!(server.certificate_refusals().is_some());
        server.shutdown().await;
        let server = builder().accept_any_certificate().start().await.unwrap();
        assert!(server.certificate_refusals().is_none());
        server.shutdown().await;
    }

    #[tokio::test]
    async fn the_own_certificate_is_checked_at_start() {
        let wrong_uri = builder().application_uri("urn:certvault:test:other").accept_any_certificate();
        let err = wrong_uri.start().await.unwrap_err();
        assert!(matches!(err, Error::OwnCertificate { source: crate::pki::IdentityError::UriMissing { .. }, .. }));
        assert_eq!(err.status_code(), StatusCode::BadCertificateUriInvalid);

        let mut wrong_host = builder().accept_any_certificate();
        wrong_host.config.endpoint_url = "opc.tcp://plc.example:0/".into();
        let err = wrong_host.start().await.unwrap_err();
        assert_eq!(err.status_code(), StatusCode::BadCertificateHostNameInvalid, "{err}");
        assert!(err.to_string().contains("plc.example"), "{err}");

        // The certificate of another key.
        let (other_key, _) = cached(2048, "client");
        let (_, cert) = cached(2048, "server");
        let err = ServerBuilder::new("opc.tcp://localhost:0/").identity(other_key, cert).unwrap_err();
        assert_eq!(err.status_code(), StatusCode::BadCertificateInvalid);
    }
}
