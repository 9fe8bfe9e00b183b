//! A TCP front for a real service (moto's S3, say) that can start hanging: it keeps
//! accepting connections but stops answering, on new connections and on those already
//! open, the way an endpoint behind a dead load balancer does. Nothing is faked: while
//! open, every byte goes to the real service and back.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The gate: forwarding (open) or hanging. Connections it hung stay hung for good,
/// also after [`Gate::open`]: their clients must give up on them by themselves.
pub struct Gate {
    /// `http://127.0.0.1:PORT`, the address to give clients instead of the service's.
    pub url: String,
    open: Arc<AtomicBool>,
    hung: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Gate {
    /// Starts an open gate in front of `upstream` (`host:port` or `http://host:port`).
    pub fn start(upstream: &str) -> Gate {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("gate: bind: {e}"));
        let url = match listener.local_addr() {
            Ok(address) => format!("http://{address}"),
            Err(e) => panic!("gate: address: {e}"),
        };
        let gate = Gate {
            url,
            open: Arc::new(AtomicBool::new(true)),
            hung: Arc::new(AtomicUsize::new(0)),
            held: Arc::new(Mutex::new(Vec::new())),
        };
        let (open, hung, held) = (gate.open.clone(), gate.hung.clone(), gate.held.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let parts = Parts {
                    open: open.clone(),
                    hung: hung.clone(),
                    held: held.clone(),
                };
                if !open.load(Ordering::SeqCst) {
                    parts.hold(client);
                    continue;
                }
                let Ok(service) = TcpStream::connect(&upstream) else {
                    // The service itself is down: the client sees its connection close.
                    continue;
                };
                match (client.try_clone(), service.try_clone()) {
                    (Ok(client_reader), Ok(service_reader)) => {
                        parts.clone().pipe(client_reader, service, true);
                        parts.pipe(service_reader, client, false);
                    }
                    _ => continue,
                }
            }
        });
        gate
    }

    /// From now on, answers nothing: new connections are accepted and held, and a
    /// request on an open connection is read and never passed on.
    pub fn hang(&self) {
        self.open.store(false, Ordering::SeqCst);
    }

    /// Forwards new connections again (those it hung stay hung).
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// How many requests or connections it has left unanswered.
    pub fn hung(&self) -> usize {
        self.hung.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Parts {
    open: Arc<AtomicBool>,
    hung: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Parts {
    /// Keeps `stream` open without ever reading or writing it again.
    fn hold(&self, stream: TcpStream) {
        self.hung.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut held) = self.held.lock() {
            held.push(stream);
        }
    }

    /// Copies `from` to `to` until either closes. A request (`from` is the client) read
    /// while the gate hangs is dropped and its connection held.
    fn pipe(self, mut from: TcpStream, mut to: TcpStream, from_client: bool) {
        std::thread::spawn(move || {
            let mut buffer = [0u8; 64 * 1024];
            loop {
                match from.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if from_client && !self.open.load(Ordering::SeqCst) {
                            // Hold both ends so that neither side sees a close.
                            self.hold(from);
                            if let Ok(mut held) = self.held.lock() {
                                held.push(to);
                            }
                            return;
                        }
                        if to.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}
