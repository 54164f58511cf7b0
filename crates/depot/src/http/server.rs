//! The accept loop. Written out (rather than `axum::serve`) because depot needs three knobs that
//! `axum::serve` does not expose: a header-read timeout against slow clients, a connection limit,
//! and closing the listener as its own step, before in-flight requests are waited for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running HTTP server.
#[derive(Debug)]
pub struct Server {
    stop: CancellationToken,
    accept: JoinHandle<GracefulShutdown>,
    local_addr: SocketAddr,
}

impl Server {
    /// Serves `router` on `listener`, at most `max_connections` at once.
    pub fn start(
        listener: TcpListener,
        router: Router,
        max_connections: usize,
        header_read_timeout: Duration,
    ) -> std::io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let accept = tokio::spawn(accept_loop(
            listener,
            router,
            Arc::new(Semaphore::new(max_connections)),
            header_read_timeout,
            stop.clone(),
        ));
        Ok(Server {
            stop,
            accept,
            local_addr,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes the listener (new connections are refused from here on) and returns the handle
    /// that waits for the open connections.
    pub async fn stop_accepting(self) -> Connections {
        self.stop.cancel();
        match self.accept.await {
            Ok(graceful) => Connections(Some(graceful)),
            Err(e) => {
                tracing::error!(error = %e, "the accept loop ended abnormally");
                Connections(None)
            }
        }
    }
}

/// The connections still open after the listener closed.
#[derive(Debug)]
pub struct Connections(Option<GracefulShutdown>);

impl Connections {
    /// Lets every in-flight request finish and closes each connection after its response
    /// (idle keep-alive connections are closed at once).
    ///
    /// # Cancellation safety
    /// Dropping the future stops waiting; the connections' tasks keep running until the process
    /// exits, so a request that was being answered still either gets its response or an error.
    pub async fn finish(self) {
        if let Some(graceful) = self.0 {
            graceful.shutdown().await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    slots: Arc<Semaphore>,
    header_read_timeout: Duration,
    stop: CancellationToken,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    loop {
        // Take a connection slot before accepting: beyond the limit, clients wait in the backlog.
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("listener closed");
    graceful
}
