//! A TCP proxy between a client under test and its server, so a test can cut the network path or point it at a
//! restarted server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every connection accepted on an OS-picked 127.0.0.1 port to the backend.
pub struct Proxy {
    port: u16,
    backend: Arc<Mutex<SocketAddr>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens and forwards to `backend`.
    pub async fn start(backend: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let backend = Arc::new(Mutex::new(backend));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (b, c) = (backend.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = *b.lock().expect("lock");
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().expect("lock").push(task);
            }
        });
        Proxy { port, backend, connections, accept }
    }

    /// The opc.tcp URL clients connect to.
    pub fn url(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/", self.port)
    }

    /// New connections go to `backend` (a restarted server); open ones stay where they are.
    pub fn switch_to(&self, backend: SocketAddr) {
        *self.backend.lock().expect("lock") = backend;
    }

    /// Cuts every open connection: both sockets close, as when a network path dies.
    pub fn cut(&self) {
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
