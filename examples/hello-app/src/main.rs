//! `hello-app [ADDR]`: the demo's example app (default `127.0.0.1:8471`).
//! Serves a page (`/`), a live counter (`GET/POST /api/counter`, JSON) and
//! an image (`/picture.svg`, drawn from the counter), so a person sees
//! requests go through the tunnel. Prints `hello-app listening on ADDR`
//! once it accepts connections; stops on SIGTERM/SIGINT.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const PAGE: &str = include_str!("page.html");

/// What the app remembers: a counter, the requests served, its start time.
struct App {
    clicks: AtomicU64,
    requests: AtomicU64,
    started: Instant,
}

impl App {
    fn new() -> App {
        App {
            clicks: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn counter_json(&self) -> String {
        format!(
            "{{\"clicks\":{},\"requests\":{},\"uptime_secs\":{}}}",
            self.clicks.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
            self.started.elapsed().as_secs()
        )
    }

    /// A picture that changes with the counter: the hue turns per click.
    fn picture(&self) -> String {
        let clicks = self.clicks.load(Ordering::Relaxed);
        let hue = (clicks * 37) % 360;
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"240\" height=\"120\" viewBox=\"0 0 240 120\">\
             <rect width=\"240\" height=\"120\" rx=\"16\" fill=\"hsl({hue},70%,45%)\"/>\
             <circle cx=\"60\" cy=\"60\" r=\"34\" fill=\"hsl({},80%,80%)\"/>\
             <text x=\"60\" y=\"72\" font-family=\"sans-serif\" font-size=\"34\" text-anchor=\"middle\" fill=\"#222\">{clicks}</text>\
             <text x=\"160\" y=\"68\" font-family=\"sans-serif\" font-size=\"22\" text-anchor=\"middle\" fill=\"#fff\">hello</text>\
             </svg>",
            (hue + 180) % 360
        )
    }

    /// Routes one request (the body is already read).
    fn respond(&self, method: &Method, path: &str) -> (StatusCode, &'static str, String) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let json = "application/json";
        match (method, path) {
            (&Method::GET, "/") | (&Method::GET, "/index.html") => {
                (StatusCode::OK, "text/html; charset=utf-8", PAGE.to_string())
            }
            (&Method::GET, "/api/counter") => (StatusCode::OK, json, self.counter_json()),
            (&Method::POST, "/api/counter") => {
                self.clicks.fetch_add(1, Ordering::Relaxed);
                (StatusCode::OK, json, self.counter_json())
            }
            (&Method::GET, "/picture.svg") => (StatusCode::OK, "image/svg+xml", self.picture()),
            (_, "/" | "/index.html" | "/api/counter" | "/picture.svg") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "method not allowed\n".into(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found\n".into(),
            ),
        }
    }
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // Drain the body (POST /api/counter sends none, but a client may).
    let _ = req.into_body().collect().await;
    let (status, content_type, body) = app.respond(&method, &path);
    let response = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid");
    Ok(response)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = match std::env::args().nth(1).as_deref() {
        None => "127.0.0.1:8471".parse()?,
        Some("-h" | "--help") => {
            println!("usage: hello-app [ADDR]   (default 127.0.0.1:8471)");
            return Ok(());
        }
        Some(a) => a.parse().map_err(|e| format!("address {a:?}: {e}"))?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("hello-app listening on {}", listener.local_addr()?);
    let app = Arc::new(App::new());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(app.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                eprintln!("hello-app: connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_counts_posts_and_requests() {
        let app = App::new();
        let (s, ct, body) = app.respond(&Method::GET, "/api/counter");
        assert_eq!((s, ct), (StatusCode::OK, "application/json"));
        assert!(body.starts_with("{\"clicks\":0,\"requests\":1,"), "{body}");
        app.respond(&Method::POST, "/api/counter");
        let (_, _, body) = app.respond(&Method::POST, "/api/counter");
        assert!(body.starts_with("{\"clicks\":2,\"requests\":3,"), "{body}");
    }

    #[test]
    fn page_picture_and_errors() {
        let app = App::new();
        let (s, ct, page) = app.respond(&Method::GET, "/");
        assert_eq!((s, ct), (StatusCode::OK, "text/html; charset=utf-8"));
        // Relative URLs: the portal serves the app under …/app/hello/.
        assert!(page.contains("\"api/counter\"") && page.contains("picture.svg"));
        assert!(!page.contains("\"/api/counter\""));
        app.respond(&Method::POST, "/api/counter");
        let (s, ct, svg) = app.respond(&Method::GET, "/picture.svg");
        assert_eq!((s, ct), (StatusCode::OK, "image/svg+xml"));
        assert!(svg.contains(">1</text>"), "{svg}");
        assert_eq!(app.respond(&Method::GET, "/nope").0, StatusCode::NOT_FOUND);
        assert_eq!(
            app.respond(&Method::DELETE, "/api/counter").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
