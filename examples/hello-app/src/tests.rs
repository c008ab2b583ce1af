use super::*;

fn get(app: &App, path: &str) -> Resp {
    app.respond(&Req {
        method: &Method::GET,
        path,
        cookie: None,
        body: b"",
    })
}

fn post(app: &App, path: &str, body: &[u8]) -> Resp {
    app.respond(&Req {
        method: &Method::POST,
        path,
        cookie: None,
        body,
    })
}

#[test]
fn counter_counts_posts_and_requests() {
    let app = App::new();
    let r = get(&app, "/api/counter");
    assert_eq!(
        (r.status, r.content_type),
        (StatusCode::OK, "application/json")
    );
    assert!(
        r.body.starts_with("{\"clicks\":0,\"requests\":1,"),
        "{}",
        r.body
    );
    post(&app, "/api/counter", b"");
    let r = post(&app, "/api/counter", b"");
    assert!(
        r.body.starts_with("{\"clicks\":2,\"requests\":3,"),
        "{}",
        r.body
    );
    assert_eq!(*app.changes.borrow(), 2);
}

#[test]
fn page_assets_picture_and_errors() {
    let app = App::new();
    let page = get(&app, "/");
    assert_eq!(
        (page.status, page.content_type),
        (StatusCode::OK, "text/html; charset=utf-8")
    );
    // Relative URLs only: the portal serves the app under …/app/hello/.
    for url in [
        "\"style.css\"",
        "\"app.js\"",
        "\"picture.svg\"",
        "\"guestbook\"",
    ] {
        assert!(page.body.contains(url), "{url} in the page");
    }
    assert!(!page.body.contains("{{greeting}}"));
    assert!(SCRIPT.contains("\"api/counter\"") && SCRIPT.contains("\"api/live\""));
    assert!(
        !SCRIPT.contains("\"/api/"),
        "no absolute API paths in app.js"
    );
    assert_eq!(get(&app, "/style.css").content_type, "text/css");
    assert!(get(&app, "/app.js")
        .content_type
        .starts_with("text/javascript"));
    post(&app, "/api/counter", b"");
    let svg = get(&app, "/picture.svg");
    assert_eq!(
        (svg.status, svg.content_type),
        (StatusCode::OK, "image/svg+xml")
    );
    assert!(svg.body.contains(">1</text>"), "{}", svg.body);
    assert_eq!(get(&app, "/nope").status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, "/api/live").status,
        StatusCode::UPGRADE_REQUIRED,
        "a plain GET of the WebSocket"
    );
    let delete = app.respond(&Req {
        method: &Method::DELETE,
        path: "/api/counter",
        cookie: None,
        body: b"",
    });
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn the_guest_book_redirects_sets_a_cookie_and_the_page_greets() {
    let app = App::new();
    let r = post(&app, "/guestbook", b"name=Ada+L%C3%B6f%3Cb%3E&x=1");
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let location = r.extra.iter().find(|(n, _)| n == header::LOCATION).unwrap();
    assert_eq!(location.1, "/");
    let cookie = &r
        .extra
        .iter()
        .find(|(n, _)| n == header::SET_COOKIE)
        .unwrap()
        .1;
    assert!(
        cookie.starts_with("hello_visitor=Ada%20L%C3%B6f%3Cb%3E; Path=/;"),
        "{cookie}"
    );
    let value = cookie.split(';').next().unwrap();
    let page = app.respond(&Req {
        method: &Method::GET,
        path: "/",
        cookie: Some(&format!("other=1; {value}")),
        body: b"",
    });
    assert!(
        page.body.contains("Welcome back, Ada Löf&lt;b&gt;."),
        "the greeting, HTML-escaped"
    );
}

#[test]
fn bad_forms_and_cookies_get_clear_errors_or_are_ignored() {
    let app = App::new();
    for body in [
        &b""[..],
        b"name=",
        b"other=x",
        b"name=%",
        b"name=%zz",
        b"name=%ff",
        b"\xff\xfe",
        "name=0123456789012345678901234567890123456789x".as_bytes(),
        b"name=a%0Ab",
    ] {
        let r = post(&app, "/guestbook", body);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}: {}", r.body);
        assert!(r.extra.is_empty(), "no cookie for {body:?}");
    }
    for cookie in ["hello_visitor=%", "hello_visitor=", "garbage", ";;;="] {
        let page = app.respond(&Req {
            method: &Method::GET,
            path: "/",
            cookie: Some(cookie),
            body: b"",
        });
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.body.contains("Welcome back"), "{cookie}");
    }
}

#[tokio::test]
async fn the_websocket_pushes_the_counter_and_echoes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { serve(listener).await.unwrap() });
    let t = std::time::Duration::from_secs(10);
    let (mut ws, _) = tokio::time::timeout(
        t,
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/live")),
    )
    .await
    .unwrap()
    .unwrap();
    let text = |m: Option<Result<Message, _>>| match m {
        Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    };
    let first = text(tokio::time::timeout(t, ws.next()).await.unwrap());
    assert!(first.starts_with("{\"clicks\":0,"), "{first}");
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(
        text(tokio::time::timeout(t, ws.next()).await.unwrap()),
        "echo:ping"
    );
    // A click over plain HTTP is pushed.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{addr}/api/counter"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send.send_request(req).await.unwrap().status(),
        StatusCode::OK
    );
    let pushed = text(tokio::time::timeout(t, ws.next()).await.unwrap());
    assert!(pushed.starts_with("{\"clicks\":1,"), "{pushed}");
}
