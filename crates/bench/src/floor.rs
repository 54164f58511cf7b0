//! The HTTP floor: what the HTTP stack alone costs on this machine. A process that serves every
//! request with the stack depot uses (tokio's multi-thread runtime, hyper's HTTP/1.1 server, one
//! task per connection, `TCP_NODELAY`), reads the body, and answers `201` with a body shaped like
//! depot's — storing nothing, with no other thread involved. depot's own rows minus this row is
//! what depot adds: its handler, the hand-off to the committer thread and back, and SQLite.
//!
//! With `hand_off`, each request also makes the trip depot's appends make to its committer and
//! back — to a plain thread that takes the requests waiting on a channel and answers each through
//! a oneshot — and nothing else: the price of crossing threads twice per request, on its own.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The length of depot's `201` body for the first record of `bench-0`, give or take the digits.
const CREATED: &[u8] =
    br#"{"count":1,"first_seq":1,"last_seq":1,"replayed":false,"stream":"bench-0"}"#;

/// Serves on `addr` until the process is killed.
pub fn serve(addr: SocketAddr, hand_off: bool) -> ! {
    let peer = hand_off.then(|| {
        let (tx, rx) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
        std::thread::Builder::new()
            .name("hand-off".into())
            .spawn(move || {
                while let Ok(ack) = rx.recv() {
                    let _ = ack.send(());
                }
            })
            .expect("spawn the hand-off thread");
        tx
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a multi-thread runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let peer = peer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let peer = peer.clone();
                    async move {
                        if let Some(peer) = peer {
                            let (ack, acked) = tokio::sync::oneshot::channel();
                            let _ = peer.send(ack);
                            let _ = acked.await;
                        }
                        answer(request).await
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match request.into_body().collect().await {
        Ok(_) => StatusCode::CREATED,
        Err(_) => StatusCode::BAD_REQUEST,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(CREATED)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
