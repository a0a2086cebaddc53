//! The library in one process: a [`Server`] on one filo stack and [`get`] on another, joined
//! by an in-process cable, both on one tokio runtime (the async API as a user would write it).

use std::time::Duration;

use filo_http::{get, ServeOptions, Server, Url};
use filo_stack::{cable, Stack};
use http_body_util::BodyExt;

fn two_stacks() -> (Stack, Stack) {
    let (a, b) = cable().unwrap();
    let s1 = Stack::builder()
        .name("web")
        .interface_plug(a, "eth,ip=10.71.0.1/24,ip=fd71::1/64")
        .build()
        .unwrap();
    let s2 = Stack::builder()
        .name("client")
        .interface_plug(b, "eth,ip=10.71.0.2/24,ip=fd71::2/64")
        .build()
        .unwrap();
    (s1, s2)
}

#[tokio::test]
async fn hyper_serves_and_fetches_between_two_stacks() {
    let (web, client) = two_stacks();
    let tmp = filo_test_support::TempDir::new("filo-http-ip");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(tmp.join("big.bin"), &big).unwrap();
    std::fs::write(tmp.join("index.html"), "<h1>hi</h1>\n").unwrap();
    let server = Server::bind(
        &web,
        ServeOptions {
            max_requests: 3,
            ..ServeOptions::new(tmp.path(), 80)
        },
    )
    .unwrap();
    let served = tokio::spawn(server.serve(std::future::pending()));
    let t = Duration::from_secs(5);
    for (url, want, ctype) in [
        ("http://10.71.0.1/", &b"<h1>hi</h1>\n"[..], "text/html"),
        (
            "http://[fd71::1]/big.bin",
            &big[..],
            "application/octet-stream",
        ),
    ] {
        let url: Url = url.parse().unwrap();
        let resp = get(&client, &url, t).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.headers()["content-type"], ctype, "{url}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body == want, "{url}: {} bytes", body.len());
    }
    let resp = get(&client, &"http://10.71.0.1/nope".parse().unwrap(), t)
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // The third request was the last: the server stops by itself.
    let n = tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the server did not stop after --max-requests")
        .unwrap()
        .unwrap();
    assert_eq!(n, 3);
}
