//! The server every session-level test talks to: our server with its key in a real vaultd, a small machine
//! namespace, users with passwords, and a trusted X.509 user whose key is also in the vault.
//!
//! The namespace mirrors the Python peer's (`tests/python/README.md`) so the same client code runs against both:
//! a writable Double `Setpoint`, an Int64 `Counter` that counts every 100 ms, a ByteString `Blob`, and a method
//! `Add(a, b)` on the object `Machine`. Writing and calling need the operator role; anonymous sessions may only read.

use std::sync::Arc;
use std::time::Duration;

use certvault::SharedKey;
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::pki::PkiStore;
use certvault_opcua::server::access::UserRole;
use certvault_opcua::server::address_space::{MethodSpec, ObjectSpec, VariableSpec};
use certvault_opcua::server::{
    AddressSpace, AddressSpaceLimits, ApplicationInfo, Server, ServerBuilder, SharedAddressSpace, UserDatabase,
};
use opcua_types::{Argument, ByteString, DataTypeId, DateTime, NodeId, ObjectId, StatusCode, Variant};
use tokio::task::JoinHandle;

use crate::{self_signed, Vaultd};

/// The test namespace's URI.
pub const MACHINE_NS: &str = "urn:certvault:test:machine";
/// The ApplicationUri of the machine server.
pub const MACHINE_URI: &str = "urn:certvault:test:machine-server";
/// The operator's user name.
pub const OPERATOR: &str = "operator";
/// The operator's password.
pub const OPERATOR_PASSWORD: &str = "s3cret-operator";
/// The common name of the trusted X.509 user (mapped to the operator role).
pub const CERT_USER: &str = "Line operator";
/// A second X.509 user common name mapped to the operator role, for user certificates made by a peer (e.g. the
/// Python peer's `gen-user-cert --name peer-operator`); trust such a certificate through [`MachineServer::user_pki`].
pub const PEER_CERT_USER: &str = "peer-operator";

/// The NodeIds of the test namespace.
#[derive(Clone, Debug)]
pub struct MachineNodes {
    /// The namespace index.
    pub ns: u16,
    /// The object.
    pub machine: NodeId,
    /// Double, writable by operators.
    pub setpoint: NodeId,
    /// Int64, +1 every 100 ms.
    pub counter: NodeId,
    /// ByteString of the configured size.
    pub blob: NodeId,
    /// Method Add(a: Double, b: Double) -> Double.
    pub add: NodeId,
}

/// Builds the machine namespace into `space`.
pub fn build_machine(space: &mut AddressSpace, blob_size: usize) -> MachineNodes {
    let ns = space.add_namespace(MACHINE_NS);
    let machine = space
        .add_object(ObjectSpec::new(NodeId::new(ns, "Machine"), "Machine", ObjectId::ObjectsFolder))
        .expect("Machine");
    let setpoint = space
        .add_variable(
            VariableSpec::new(NodeId::new(ns, "Setpoint"), "Setpoint", machine.clone())
                .data_type(DataTypeId::Double)
                .value(0.0)
                .writable(),
        )
        .expect("Setpoint");
    let counter = space
        .add_variable(
            VariableSpec::new(NodeId::new(ns, "Counter"), "Counter", machine.clone())
                .data_type(DataTypeId::Int64)
                .value(0i64),
        )
        .expect("Counter");
    let blob: Vec<u8> = (0..blob_size).map(|i| (i % 256) as u8).collect();
    let blob = space
        .add_variable(
            VariableSpec::new(NodeId::new(ns, "Blob"), "Blob", machine.clone())
                .data_type(DataTypeId::ByteString)
                .value(ByteString::from(blob)),
        )
        .expect("Blob");
    let double = |name: &str| Argument {
        name: name.into(),
        data_type: DataTypeId::Double.into(),
        value_rank: -1,
        array_dimensions: None,
        description: name.into(),
    };
    let add = space
        .add_method(
            MethodSpec::new(NodeId::new(ns, "Machine.Add"), "Add", machine.clone(), |call| async move {
                match call.inputs.as_slice() {
                    [Variant::Double(a), Variant::Double(b)] => Ok(vec![Variant::Double(a + b)]),
                    _ => Err(StatusCode::BadInvalidArgument),
                }
            })
            .inputs(vec![double("a"), double("b")])
            .outputs(vec![double("sum")]),
        )
        .expect("Add");
    MachineNodes { ns, machine, setpoint, counter, blob, add }
}

/// Our server with the machine namespace, keys in a vaultd, users and a user trust list.
pub struct MachineServer {
    /// The running server.
    pub server: Server,
    /// The server certificate (DER).
    pub certificate: Vec<u8>,
    /// The namespace's nodes.
    pub nodes: MachineNodes,
    /// The application trust store (trust clients here).
    pub pki: Arc<PkiStore>,
    /// The X.509 user identity (certificate trusted, key in the vaultd).
    pub cert_user: LocalIdentity,
    /// The user trust store: trust further user certificates here (read again on every check).
    pub user_pki: Arc<PkiStore>,
    /// The address space, to change values from the test.
    pub space: SharedAddressSpace,
    counter: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for MachineServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Drop for MachineServer {
    fn drop(&mut self) {
        self.counter.abort();
    }
}

impl MachineServer {
    /// Starts the server with its key (and the X.509 user's key) in `vaultd`, offering None and every secured
    /// policy x mode, with a Blob of `blob_size` bytes. `customize` may change the builder (limits, ...).
    pub async fn start(
        vaultd: &Vaultd,
        blob_size: usize,
        customize: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> MachineServer {
        let key: SharedKey = vaultd.generate_rsa("machine-server", 2048);
        Self::start_with_key(vaultd, key, blob_size, customize).await
    }

    /// As [`MachineServer::start`] with the server's application key `key` from elsewhere (a PKCS#11 token); the
    /// X.509 user's key is still made in `vaultd`.
    pub async fn start_with_key(
        vaultd: &Vaultd,
        key: SharedKey,
        blob_size: usize,
        customize: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> MachineServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let certificate = self_signed(&key, "machine", MACHINE_URI);
        let pki = Arc::new(PkiStore::create_or_open(dir.path().join("pki")).expect("pki"));
        let user_pki = Arc::new(PkiStore::create_or_open(dir.path().join("user-pki")).expect("user pki"));
        let user_key = vaultd.generate_rsa("line-operator", 2048);
        let user_cert = self_signed(&user_key, CERT_USER, "urn:certvault:test:user");
        user_pki.trust(&user_cert).expect("trust the user");
        let cert_user = LocalIdentity::new(user_key, user_cert).expect("user identity");
        let mut users = UserDatabase::empty();
        // Tests run in debug builds; the default cost is for production. The PHC string carries its cost.
        users.add_hashed(OPERATOR.into(), cheap_hash(OPERATOR_PASSWORD), UserRole::Operator).expect("operator");
        users.map_certificate_common_name(CERT_USER, UserRole::Operator);
        users.map_certificate_common_name(PEER_CERT_USER, UserRole::Operator);
        let info = ApplicationInfo {
            application_uri: MACHINE_URI.into(),
            product_uri: "urn:certvault".into(),
            application_name: "certvault test machine".into(),
        };
        let mut space = AddressSpace::new(&info, AddressSpaceLimits::default(), DateTime::now());
        let nodes = build_machine(&mut space, blob_size);
        let space = SharedAddressSpace::new(space);
        let builder = ServerBuilder::new("opc.tcp://127.0.0.1:0/")
            .application_uri(MACHINE_URI)
            .identity(key, certificate.clone())
            .expect("identity")
            .secure_endpoints()
            .allow_security_none()
            .pki(pki.clone())
            .users(users)
            .user_pki(user_pki.clone())
            .address_space(space.clone());
        let server = customize(builder).start().await.expect("server");
        let counter = {
            let space = space.clone();
            let id = nodes.counter.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut n = 0i64;
                loop {
                    tick.tick().await;
                    n += 1;
                    if space.set_value(&id, n).is_err() {
                        return;
                    }
                }
            })
        };
        MachineServer { server, certificate, nodes, pki, cert_user, user_pki, space, counter, _dir: dir }
    }
}

/// An Argon2id PHC string with a small cost, for test users.
pub fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let params = argon2::Params::new(1024, 1, 1, None).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    argon.hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng)).expect("hash").to_string()
}
