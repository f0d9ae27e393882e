//! Test only: a `kube::Client` whose requests a closure answers instead of an API server, so the
//! runtime's loops are tested against one that hangs, answers once, or holds no objects.
use axum::http::{Request, Response};
use http_body_util::Full;
use hyper::body::Bytes;

/// What the mock API server does with one request.
pub enum Reply {
    /// Answers with this status and JSON body.
    Json(u16, &'static str),
    /// Accepts the request and never answers (a paused API server).
    Hang,
}

/// A client whose every request `reply` answers.
pub fn client(
    reply: impl Fn(&Request<kube::client::Body>) -> Reply + Send + Sync + 'static,
) -> kube::Client {
    let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
        let reply = reply(&req);
        async move {
            let (status, body) = match reply {
                Reply::Json(status, body) => (status, body),
                Reply::Hang => std::future::pending().await,
            };
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .expect("a static response is valid"),
            )
        }
    });
    kube::Client::new(svc, "default")
}
