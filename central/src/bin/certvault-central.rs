//! `certvault-central`: the operator CLI and server of the certificate management central. Operator commands work
//! on the same database as the server, through the same library; `serve` runs the HTTP+JSON API. See
//! `docs/central.md`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use certvault_central::config::Config;
use certvault_central::registry::{self, Entitlement, KeyOriginKind, NewOrderItem, RevocationReason};
use clap::{Parser, Subcommand};
use serde::Serialize;

/// The certvault certificate management central: devices, entitlements, orders, issuers, CRLs.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, env = "CERTVAULT_CENTRAL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database: a SQLite file path, a `sqlite:` or a `postgres://` URL (overrides the configuration).
    #[arg(long, env = "CERTVAULT_CENTRAL_DATABASE", value_name = "URL")]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator HTTP+JSON API.
    Serve {
        /// Address to listen on (overrides the configuration; port 0 picks one). The bound address is printed.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Device types.
    #[command(subcommand)]
    DeviceType(DeviceTypeCmd),
    /// Devices (dongles) and their entitlement.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Orders: which certificates a device gets.
    #[command(subcommand)]
    Order(OrderCmd),
    /// Issued and recorded certificates.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Unrevoked certificates that expire within N days.
    Expiring {
        /// Days from now.
        #[arg(long)]
        days: u32,
    },
    /// The central's CAs and their CRLs.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Process a request file and write the update file (needs `[update_signer]`, and `[key_maker]` for
    /// central-made keys).
    Process {
        /// The request file.
        request: PathBuf,
        /// Where to write the update file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Record a receipt file (needs `[update_signer]`).
    Receipt {
        /// The receipt file.
        receipt: PathBuf,
    },
    /// GDS push to a running OPC UA server: renew its certificate (key made in the server's vault, or with
    /// `--central-key` in the central's, sealed to the server's vault), and/or write the CA and its current CRL into
    /// its trust list. See `docs/central.md`, push section.
    Push(Box<PushArgs>),
}

/// Arguments of `push`.
#[derive(clap::Args, Debug)]
struct PushArgs {
    /// The server's endpoint URL (`opc.tcp://host:port/`).
    #[arg(long, value_name = "URL")]
    url: String,
    /// The server's device: the serial of the dongle that holds its key (registered and entitled here).
    #[arg(long, value_name = "SERIAL")]
    device: String,
    /// The central's CA that issues the certificate and whose CRL goes into the trust list.
    #[arg(long, value_name = "NAME")]
    ca: String,
    /// Validity of the new certificate, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// The central's OPC UA client key (`vaultd:` or `pkcs11:` URI).
    #[arg(long, value_name = "URI")]
    client_key: String,
    /// The central's OPC UA client certificate (DER or PEM) for that key.
    #[arg(long, value_name = "FILE")]
    client_cert: PathBuf,
    /// The central's trust store (OPC UA Part 12 layout): it must trust the server's certificate or its CA.
    #[arg(long, value_name = "DIR")]
    pki: PathBuf,
    /// Administrator user name on the server (with `--password-file`).
    #[arg(long, value_name = "NAME", conflicts_with = "user_cert")]
    user: Option<String>,
    /// File holding the administrator's password (first line).
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<PathBuf>,
    /// Administrator X.509 user certificate (DER or PEM), with `--user-key`.
    #[arg(long, value_name = "FILE", requires = "user_key")]
    user_cert: Option<PathBuf>,
    /// The X.509 user's key (`vaultd:` or `pkcs11:` URI).
    #[arg(long, value_name = "URI", requires = "user_cert")]
    user_key: Option<String>,
    /// The central makes the key (in the vault `--key-maker` names) and sends it sealed to the server's vault,
    /// instead of CreateSigningRequest with a key made by the server.
    #[arg(long, requires = "key_maker")]
    central_key: bool,
    /// The central's key maker: a `vaultd:` URI (its socket, container serial and PIN; the object is ignored).
    #[arg(long, value_name = "URI")]
    key_maker: Option<String>,
    /// The server vault's transport key (SPKI, PEM or DER); default: the one the device registered.
    #[arg(long, value_name = "FILE")]
    transport_key: Option<PathBuf>,
    /// The OAEP hash the server vault unwraps with (`sha256`, or `sha1` for SoftHSM2 tokens).
    #[arg(long, default_value = "sha256")]
    transport_oaep: String,
    /// Also write the CA certificate and its current CRL into the server's trust list.
    #[arg(long)]
    trust_list: bool,
    /// Only write the CA certificate and its current CRL into the server's trust list (after a revocation).
    #[arg(long, conflicts_with = "central_key")]
    trust_list_only: bool,
    /// Seconds allowed for connecting and for each call.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Subcommand, Debug)]
enum DeviceTypeCmd {
    /// Register a device type.
    Add {
        /// Its name.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List device types.
    List,
}

#[derive(Subcommand, Debug)]
enum DeviceCmd {
    /// Entitle a dongle (register it, or re-entitle it).
    Entitle {
        /// Dongle serial.
        serial: String,
        /// Device type.
        #[arg(long = "type")]
        device_type: String,
        /// The device identity public key (SPKI, PEM or DER). Without it, the first request pins it.
        #[arg(long, value_name = "FILE")]
        device_key: Option<PathBuf>,
        /// The dongle's transport public key (SPKI, PEM or DER). Without it, the first request pins it.
        #[arg(long, value_name = "FILE")]
        transport_key: Option<PathBuf>,
    },
    /// Withdraw a dongle's entitlement.
    Disentitle {
        /// Dongle serial.
        serial: String,
    },
    /// Replace a dongle: the new one inherits the device type, and the keys the central made for the old one are
    /// re-sealed to it on its first request.
    Replace {
        /// The old dongle's serial.
        old: String,
        /// The new dongle's serial.
        new: String,
        /// The new dongle's device identity public key (SPKI, PEM or DER).
        #[arg(long, value_name = "FILE")]
        device_key: Option<PathBuf>,
        /// The new dongle's transport public key (SPKI, PEM or DER).
        #[arg(long, value_name = "FILE")]
        transport_key: Option<PathBuf>,
    },
    /// List devices.
    List,
    /// Show one device.
    Show {
        /// Dongle serial.
        serial: String,
    },
    /// Devices that were sent an update but never confirmed it with a receipt.
    Unconfirmed,
}

#[derive(Subcommand, Debug)]
enum OrderCmd {
    /// Create an order of one item (use `--items FILE` for several).
    Create {
        /// Dongle serial.
        #[arg(long)]
        device: String,
        /// A JSON array of items (fields as in the API); replaces the single-item options.
        #[arg(long, value_name = "FILE")]
        items: Option<PathBuf>,
        /// The key's label in the device's vault.
        #[arg(long, required_unless_present = "items")]
        label: Option<String>,
        /// Key algorithm: rsa2048, rsa3072, rsa4096, p256, p384.
        #[arg(long, default_value = "rsa2048")]
        algorithm: String,
        /// The OPC UA ApplicationUri.
        #[arg(long, required_unless_present = "items")]
        application_uri: Option<String>,
        /// A host name or IP address (repeat).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Issuer: self-signed, ca:NAME or external:NAME.
        #[arg(long, required_unless_present = "items")]
        issuer: Option<String>,
        /// Where the key is made: device or central.
        #[arg(long, default_value = "device")]
        key_origin: String,
    },
    /// List orders.
    List {
        /// Only this device's.
        #[arg(long)]
        device: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum CertCmd {
    /// List certificates.
    List {
        /// Only this device's.
        #[arg(long)]
        device: Option<String>,
    },
    /// Write one certificate (by serial number, hex) as DER.
    Get {
        /// Serial number.
        serial: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a certificate (by serial number, hex); its CA's CRL is re-published at once.
    Revoke {
        /// Serial number.
        serial: String,
        /// unspecified, key-compromise, affiliation-changed, superseded, cessation-of-operation,
        /// certificate-hold, privilege-withdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum CaCmd {
    /// Create a CA whose key is in a vault: its self-signed certificate is made inside that vault.
    Create {
        /// Name (`ca:NAME` in orders).
        name: String,
        /// The key's vault URI (`vaultd:...` or `pkcs11:...`).
        #[arg(long)]
        key: String,
        /// The CA certificate's common name.
        #[arg(long)]
        common_name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// List CAs.
    List,
    /// Write a CA's current CRL (DER); `--new` publishes a new one first.
    Crl {
        /// CA name.
        name: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Sign and publish a new CRL.
        #[arg(long)]
        new: bool,
    },
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Reads a public key file (PEM `PUBLIC KEY` or DER SubjectPublicKeyInfo) as base64 DER.
fn read_public_key(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = if bytes.starts_with(b"-----BEGIN") {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if pem.label != "PUBLIC KEY" {
            bail!("{}: expected a PUBLIC KEY, found {}", path.display(), pem.label);
        }
        pem.contents
    } else {
        bytes
    };
    certvault::PublicKey::from_spki(&der).with_context(|| format!("{}", path.display()))?;
    Ok(B64.encode(der))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CERTVAULT_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(db) = &cli.database {
        config.database = db.clone();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(run(cli.command, config))
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    // Only the commands that read or write provisioning files, or make keys, open the update signer and the key
    // maker's vault (a push with --central-key records the key's backup under the configured backup key).
    let makes_keys = matches!(&command, Command::Push(args) if args.central_key);
    let central = match command {
        Command::Serve { .. } | Command::Process { .. } | Command::Receipt { .. } => {
            config.provisioning_central().await?
        }
        _ if makes_keys => config.provisioning_central().await?,
        _ => config.central().await?,
    };
    let db = central.db().clone();
    match command {
        Command::Serve { listen } => {
            let addr = listen.unwrap_or(config.listen);
            let token = config.operator_token()?;
            if token.is_none() {
                tracing::warn!("no operator_token_file: the operator API is open to whoever reaches {addr}");
            }
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
            let bound = listener.local_addr()?;
            println!("listening on http://{bound}");
            tracing::info!(%bound, "operator API up");
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            certvault_central::api::serve(Arc::new(central), token, listener, async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = term => {}
                }
            })
            .await?;
        }
        Command::DeviceType(DeviceTypeCmd::Add { name, description }) => {
            print_json(&registry::add_device_type(&db, &name, &description).await?)?
        }
        Command::DeviceType(DeviceTypeCmd::List) => print_json(&registry::device_types(&db).await?)?,
        Command::Device(DeviceCmd::Entitle { serial, device_type, device_key, transport_key }) => {
            let e = Entitlement {
                serial,
                device_type,
                device_public_key: device_key.as_deref().map(read_public_key).transpose()?,
                transport_public_key: transport_key.as_deref().map(read_public_key).transpose()?,
            };
            print_json(&registry::entitle(&db, &e).await?)?
        }
        Command::Device(DeviceCmd::Disentitle { serial }) => print_json(&registry::disentitle(&db, &serial).await?)?,
        Command::Device(DeviceCmd::Replace { old, new, device_key, transport_key }) => {
            let e = Entitlement {
                serial: new,
                device_type: String::new(),
                device_public_key: device_key.as_deref().map(read_public_key).transpose()?,
                transport_public_key: transport_key.as_deref().map(read_public_key).transpose()?,
            };
            print_json(&central.replace_dongle(&old, &e).await?)?
        }
        Command::Device(DeviceCmd::List) => print_json(&registry::devices(&db).await?)?,
        Command::Device(DeviceCmd::Show { serial }) => print_json(&registry::device(&db, &serial).await?)?,
        Command::Device(DeviceCmd::Unconfirmed) => print_json(&registry::unconfirmed(&db).await?)?,
        Command::Order(OrderCmd::Create {
            device,
            items,
            label,
            algorithm,
            application_uri,
            hosts,
            days,
            issuer,
            key_origin,
        }) => {
            let items: Vec<NewOrderItem> = match items {
                Some(path) => serde_json::from_slice(
                    &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("{}: a JSON array of order items", path.display()))?,
                None => {
                    let key_origin = match key_origin.as_str() {
                        "device" => KeyOriginKind::Device,
                        "central" => KeyOriginKind::Central,
                        other => bail!("--key-origin {other:?}: use device or central"),
                    };
                    vec![NewOrderItem {
                        label: label.unwrap_or_default(),
                        key_algorithm: algorithm,
                        application_uri: application_uri.unwrap_or_default(),
                        host_names: hosts,
                        validity_days: days,
                        issuer: issuer.unwrap_or_default(),
                        key_origin,
                    }]
                }
            };
            print_json(&registry::create_order(&db, &device, &items).await?)?
        }
        Command::Order(OrderCmd::List { device }) => print_json(&registry::orders(&db, device.as_deref()).await?)?,
        Command::Cert(CertCmd::List { device }) => print_json(&registry::certificates(&db, device.as_deref()).await?)?,
        Command::Cert(CertCmd::Get { serial, out }) => {
            let der = registry::certificate_der(&db, &serial).await?;
            std::fs::write(&out, der).with_context(|| format!("writing {}", out.display()))?;
        }
        Command::Cert(CertCmd::Revoke { serial, reason }) => {
            let reason: RevocationReason = reason.parse()?;
            print_json(&central.revoke(&serial, reason).await?)?
        }
        Command::Expiring { days } => print_json(&registry::expiring(&db, days).await?)?,
        Command::Ca(CaCmd::Create { name, key, common_name, days }) => {
            print_json(&central.create_ca(&name, &key, &common_name, days).await?)?
        }
        Command::Ca(CaCmd::List) => print_json(&central.cas().await?)?,
        Command::Ca(CaCmd::Crl { name, out, new }) => {
            let der = if new { central.publish_crl(&name).await? } else { central.crl(&name).await? };
            std::fs::write(&out, der).with_context(|| format!("writing {}", out.display()))?;
        }
        Command::Process { request, out } => {
            let body = std::fs::read(&request).with_context(|| format!("reading {}", request.display()))?;
            let update = central.process_file(&body).await?;
            std::fs::write(&out, update).with_context(|| format!("writing {}", out.display()))?;
        }
        Command::Receipt { receipt } => {
            let body = std::fs::read(&receipt).with_context(|| format!("reading {}", receipt.display()))?;
            print_json(&central.receipt_file(&body).await?)?
        }
        Command::Push(args) => push(&central, *args).await?,
    }
    db.close().await;
    Ok(())
}

/// Reads a certificate file, DER or PEM.
fn read_certificate(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if pem.label != "CERTIFICATE" {
            bail!("{}: expected a CERTIFICATE, found {}", path.display(), pem.label);
        }
        return Ok(pem.contents);
    }
    Ok(bytes)
}

/// `push`: kept apart from the other commands; the work is in `certvault_central::push`.
async fn push(central: &certvault_central::Central, args: PushArgs) -> anyhow::Result<()> {
    use certvault_central::push::{self, KeySource, PushRequest, PushTarget};
    use certvault_opcua::client::UserIdentity;
    let open_key = |uri: &str| -> anyhow::Result<certvault::SharedKey> {
        let parsed: certvault::uri::KeyUri = uri.parse().with_context(|| format!("key URI {uri:?}"))?;
        Ok(certvault::store::open_key(&parsed)?)
    };
    let client_cert = read_certificate(&args.client_cert)?;
    let client_key = open_key(&args.client_key).context("the central's client key")?;
    let client = certvault_opcua::channel::asymmetric::LocalIdentity::new(client_key, client_cert.clone())
        .context("the client certificate is not for the client key")?;
    let client_application_uri = certvault_opcua::pki::Cert::from_der(&client_cert)
        .map_err(|e| anyhow::anyhow!("client certificate: {e}"))?
        .uris()
        .first()
        .cloned()
        .context("the client certificate names no ApplicationUri")?;
    let pki = Arc::new(
        certvault_opcua::pki::PkiStore::create_or_open(&args.pki)
            .with_context(|| format!("trust store {}", args.pki.display()))?,
    );
    let user = match (&args.user, &args.password_file, &args.user_cert, &args.user_key) {
        (Some(name), Some(file), None, None) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            UserIdentity::user_name(name.clone(), text.lines().next().unwrap_or_default().to_owned())
        }
        (None, None, Some(cert), Some(key)) => {
            UserIdentity::x509(read_certificate(cert)?, open_key(key).context("the user key")?)
        }
        _ => bail!("name the administrator: --user with --password-file, or --user-cert with --user-key"),
    };
    let target = PushTarget {
        endpoint_url: args.url.clone(),
        client,
        client_application_uri,
        pki,
        user,
        timeout: std::time::Duration::from_secs(args.timeout),
    };
    if args.trust_list_only {
        push::push_trust_list(central, &target, &args.ca).await?;
        println!("{}", serde_json::json!({ "trust_list": true, "ca": args.ca }));
        return Ok(());
    }
    let key = if args.central_key {
        let uri = args.key_maker.as_deref().context("--central-key needs --key-maker")?;
        let Ok(certvault::uri::KeyUri::Vaultd(v)) = uri.parse::<certvault::uri::KeyUri>() else {
            bail!("--key-maker must be a vaultd: URI");
        };
        let socket = v.socket.clone().unwrap_or_else(certvault::daemon::server::default_socket);
        let maker = certvault::DaemonClient::connect(socket, v.serial.clone())?;
        if let Some(pin) = &v.pin {
            maker.login(&pin.read()?)?;
        }
        let oaep = match args.transport_oaep.as_str() {
            "sha256" => certvault::provision::OaepHash::Sha256,
            "sha1" => certvault::provision::OaepHash::Sha1,
            other => bail!("--transport-oaep {other:?}: use sha256 or sha1"),
        };
        let transport = match &args.transport_key {
            Some(file) => Some(certvault::provision::Recipient { spki: B64.decode(read_public_key(file)?)?, oaep }),
            None => None,
        };
        KeySource::Central { maker: Arc::new(maker), transport }
    } else {
        KeySource::Server
    };
    let request =
        PushRequest { device: args.device, ca: args.ca, validity_days: args.days, key, trust_list: args.trust_list };
    let report = push::push(central, &target, &request).await?;
    print_json(&report)
}
