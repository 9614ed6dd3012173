//! The OpenAI-compatible client against the in-process fake server: retries, backoff,
//! Retry-After, timeouts, non-retryable errors, reasoning fields and load balancing; and
//! against hand-written vLLM-like replicas: token-level completions and LoRA adapters loaded
//! on every replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use metis_openai::fake_server::{FakeRequest, FakeServer, Fault, Responder, Scripted};
use metis_openai::{
    ChatMessage, ChatRequest, Client, ClientError, Endpoint, GenParams, RetryPolicy,
    TokenCompletionRequest,
};

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        request_timeout: Duration::from_secs(10),
    }
}

fn request(prompt: &str) -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages: vec![
            ChatMessage::system("You are a security analyst."),
            ChatMessage::user(prompt),
        ],
        params: GenParams {
            temperature: 0.6,
            top_p: 0.95,
            max_tokens: 256,
            seed: Some(7),
        },
    }
}

fn client_for(servers: &[&FakeServer], policy: RetryPolicy) -> Client {
    Client::new(
        servers.iter().map(|s| Endpoint::new(&s.base_url)).collect(),
        policy,
    )
    .unwrap()
}

fn responder(
    f: impl Fn(&FakeRequest, u64) -> Result<Scripted, Fault> + Send + Sync + 'static,
) -> Responder {
    Arc::new(f)
}

#[tokio::test]
async fn retry_after_429_is_honoured() {
    let server = FakeServer::start(responder(|_, attempt| {
        if attempt == 1 {
            Err(Fault::TooManyRequests { retry_after_s: 1 })
        } else {
            Ok(Scripted::text("ok"))
        }
    }))
    .await
    .unwrap();
    let client = client_for(&[&server], fast_policy());
    let t = Instant::now();
    let resp = client.chat(&request("q")).await.unwrap();
    let elapsed = t.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "Retry-After ignored: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(resp.content, "ok");
    assert_eq!(resp.attempts, 2);
    assert!(resp.latency_ms >= 900);
    assert_eq!(server.total_requests(), 2);
    let log = server.request_log();
    assert_eq!(log[0].1, Err("TooManyRequests".to_string()));
    assert_eq!(log[1].1, Ok(()));
    server.shutdown().await;
}

#[tokio::test]
async fn server_error_twice_then_ok() {
    let server = FakeServer::start(responder(|_, attempt| {
        if attempt <= 2 {
            Err(Fault::ServerError)
        } else {
            Ok(Scripted::text("third time lucky"))
        }
    }))
    .await
    .unwrap();
    let client = client_for(&[&server], fast_policy());
    let resp = client.chat(&request("q")).await.unwrap();
    assert_eq!(resp.attempts, 3);
    assert_eq!(resp.content, "third time lucky");
    assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
    assert_eq!(resp.endpoint, server.base_url);
    assert_eq!(server.total_requests(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn hang_times_out_and_gives_up() {
    let server = FakeServer::start(responder(|_, _| Err(Fault::Hang)))
        .await
        .unwrap();
    let policy = RetryPolicy {
        max_attempts: 3,
        request_timeout: Duration::from_millis(200),
        ..fast_policy()
    };
    let client = client_for(&[&server], policy);
    let t = Instant::now();
    let err = client.chat(&request("q")).await.unwrap_err();
    let elapsed = t.elapsed();
    assert_eq!(
        err,
        ClientError::GaveUp {
            attempts: 3,
            last: Box::new(ClientError::Timeout)
        }
    );
    assert!(!err.is_retryable());
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(server.total_requests(), 3);
    // Shutdown must not wait for the hanging handlers.
    let t = Instant::now();
    server.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn malformed_json_is_retried() {
    let server = FakeServer::start(responder(|req, attempt| {
        if req.last_user() == "always" || attempt == 1 {
            Err(Fault::MalformedJson)
        } else {
            Ok(Scripted::text("fine"))
        }
    }))
    .await
    .unwrap();
    let client = client_for(&[&server], fast_policy());
    let resp = client.chat(&request("once")).await.unwrap();
    assert_eq!(resp.attempts, 2);
    assert_eq!(resp.content, "fine");

    match client.chat(&request("always")).await.unwrap_err() {
        ClientError::GaveUp { attempts, last } => {
            assert_eq!(attempts, 4);
            assert!(matches!(*last, ClientError::Malformed(_)), "{last:?}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    let counts = server.counts_by_key();
    assert_eq!(counts[&("once".to_string(), Some(7))], 2);
    assert_eq!(counts[&("always".to_string(), Some(7))], 4);
    server.shutdown().await;
}

#[tokio::test]
async fn client_errors_fail_at_once() {
    let server = FakeServer::start(responder(|req, _| {
        let status = if req.last_user() == "unauthorised" {
            401
        } else {
            400
        };
        Err(Fault::Http {
            status,
            body: format!("maximum context length is 8192 tokens {}", "x".repeat(2000)),
        })
    }))
    .await
    .unwrap();
    let client = client_for(&[&server], fast_policy());
    let err = client.chat(&request("too long")).await.unwrap_err();
    match &err {
        ClientError::Http { status, body } => {
            assert_eq!(*status, 400);
            assert!(body.contains("maximum context length"));
            assert!(body.chars().count() <= 501, "body not truncated");
        }
        other => panic!("expected Http 400, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(server.total_requests(), 1);

    let err = client.chat(&request("unauthorised")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(server.total_requests(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn gave_up_carries_last_error() {
    let server = FakeServer::start(responder(|_, _| Err(Fault::ServerError)))
        .await
        .unwrap();
    let client = client_for(&[&server], fast_policy());
    match client.chat(&request("q")).await.unwrap_err() {
        ClientError::GaveUp { attempts, last } => {
            assert_eq!(attempts, 4);
            assert!(
                matches!(*last, ClientError::Http { status: 500, .. }),
                "{last:?}"
            );
            assert!(last.is_retryable());
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert_eq!(server.total_requests(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn truncated_think_is_returned_verbatim() {
    let server = FakeServer::start(responder(|_, _| Err(Fault::TruncatedThink)))
        .await
        .unwrap();
    let client = client_for(&[&server], fast_policy());
    let resp = client.chat(&request("q")).await.unwrap();
    assert_eq!(resp.content, "<think>reasoning that never closes");
    assert_eq!(resp.finish_reason.as_deref(), Some("length"));
    assert_eq!(resp.reasoning, None);
    assert_eq!(resp.attempts, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn reasoning_content_and_usage_parsed_and_params_sent() {
    let server = FakeServer::start(responder(|_, _| {
        Ok(Scripted {
            content: "The answer is B".into(),
            reasoning: Some("CVE-2021-44228 is Log4Shell".into()),
            finish_reason: "stop".into(),
            delay: Duration::ZERO,
        })
    }))
    .await
    .unwrap();
    let client = client_for(&[&server], fast_policy());
    let resp = client.chat(&request("which CVE")).await.unwrap();
    assert_eq!(resp.content, "The answer is B");
    assert_eq!(
        resp.reasoning.as_deref(),
        Some("CVE-2021-44228 is Log4Shell")
    );
    assert_eq!(resp.prompt_tokens, Some(7));
    assert_eq!(resp.completion_tokens, Some(7));

    let mut no_seed = request("no seed");
    no_seed.params.seed = None;
    client.chat(&no_seed).await.unwrap();

    let log = server.request_log();
    assert_eq!(log.len(), 2);
    let sent = &log[0].0;
    assert_eq!(sent.model, "m");
    assert_eq!(sent.messages, request("which CVE").messages);
    assert_eq!(sent.seed, Some(7));
    assert_eq!(sent.temperature, 0.6);
    assert_eq!(sent.top_p, 0.95);
    assert_eq!(sent.max_tokens, 256);
    assert_eq!(log[1].0.seed, None);
    server.shutdown().await;
}

/// A hand-written server in the newer vLLM format (`message.reasoning`, `content: null`)
/// that also requires a bearer token.
#[tokio::test]
async fn reasoning_field_and_bearer_auth() {
    async fn chat(headers: HeaderMap, body: axum::body::Bytes) -> axum::response::Response {
        use axum::response::IntoResponse;
        let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(req["stream"], serde_json::json!(false));
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer s3cret") {
            return (axum::http::StatusCode::UNAUTHORIZED, "bad key").into_response();
        }
        axum::Json(serde_json::json!({
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": null, "reasoning": "thinking..." },
                "finish_reason": "length"
            }]
        }))
        .into_response()
    }
    async fn models() -> axum::Json<serde_json::Value> {
        axum::Json(serde_json::json!({"object": "list", "data": [{"id": "a"}, {"id": "b"}]}))
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let good = Client::new(
        vec![Endpoint::new(&base).with_api_key("s3cret")],
        fast_policy(),
    )
    .unwrap();
    let resp = good.chat(&request("q")).await.unwrap();
    assert_eq!(resp.content, "");
    assert_eq!(resp.reasoning.as_deref(), Some("thinking..."));
    assert_eq!(resp.finish_reason.as_deref(), Some("length"));
    assert_eq!(resp.prompt_tokens, None);
    assert_eq!(good.list_models().await.unwrap(), vec!["a", "b"]);

    let bad = Client::new(
        vec![Endpoint::new(&base).with_api_key("nope")],
        fast_policy(),
    )
    .unwrap();
    let err = bad.chat(&request("q")).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 401, .. }),
        "{err:?}"
    );
    task.abort();
}

#[tokio::test]
async fn two_endpoints_share_concurrent_traffic() {
    let slow = responder(|_, _| {
        Ok(Scripted {
            delay: Duration::from_millis(20),
            ..Scripted::text("ok")
        })
    });
    let a = FakeServer::start(slow.clone()).await.unwrap();
    let b = FakeServer::start(slow).await.unwrap();
    let client = client_for(&[&a, &b], fast_policy());
    let n = 256;
    let results = futures::future::join_all((0..n).map(|i| {
        let client = client.clone();
        async move { client.chat(&request(&format!("q{i}"))).await }
    }))
    .await;
    assert!(results.iter().all(|r| r.is_ok()));
    let (ta, tb) = (a.total_requests(), b.total_requests());
    assert_eq!(ta + tb, n);
    assert!(ta >= n / 4 && tb >= n / 4, "unbalanced: {ta} vs {tb}");
    let served_by_a = results
        .iter()
        .filter(|r| r.as_ref().unwrap().endpoint == a.base_url)
        .count() as u64;
    assert_eq!(served_by_a, ta);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn retry_moves_to_the_healthy_replica() {
    let broken = FakeServer::start(responder(|_, _| Err(Fault::ServerError)))
        .await
        .unwrap();
    let healthy = FakeServer::start(FakeServer::instant("ok")).await.unwrap();
    let client = client_for(&[&broken, &healthy], fast_policy());
    for i in 0..10 {
        let resp = client.chat(&request(&format!("q{i}"))).await.unwrap();
        assert!(resp.attempts <= 2, "attempts {}", resp.attempts);
        assert_eq!(resp.endpoint, healthy.base_url);
    }
    assert!(broken.total_requests() >= 1);
    broken.shutdown().await;
    healthy.shutdown().await;
}

#[tokio::test]
async fn dead_endpoint_is_a_retryable_transport_error() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::new(
        vec![Endpoint::new(format!("http://127.0.0.1:{port}/v1"))],
        RetryPolicy {
            max_attempts: 2,
            ..fast_policy()
        },
    )
    .unwrap();
    match client.chat(&request("q")).await.unwrap_err() {
        ClientError::GaveUp { attempts: 2, last } => {
            assert!(matches!(*last, ClientError::Transport(_)), "{last:?}")
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
}

#[tokio::test]
async fn list_models_works() {
    let server = FakeServer::start(FakeServer::instant("x")).await.unwrap();
    let client = client_for(&[&server], fast_policy());
    assert_eq!(client.list_models().await.unwrap(), vec!["fake-model"]);
    assert_eq!(server.total_requests(), 0);
    server.shutdown().await;
}

#[test]
fn constructor_errors() {
    assert_eq!(
        Client::new(vec![], fast_policy()).unwrap_err(),
        ClientError::NoEndpoints
    );
    assert!(matches!(
        Client::new(vec![Endpoint::new("not a url")], fast_policy()),
        Err(ClientError::BadUrl(_))
    ));
}

/// Throughput smoke test: `cargo test --release -p metis-openai --test client -- --ignored`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "throughput check; run in release"]
async fn throughput_at_64_concurrent() {
    use futures::StreamExt;
    let server = FakeServer::start(FakeServer::instant("A")).await.unwrap();
    let client = client_for(&[&server], fast_policy());
    let n = 20_000usize;
    let reqs: Vec<ChatRequest> = (0..n).map(|i| request(&format!("question {i}"))).collect();
    let t = Instant::now();
    let ok = futures::stream::iter(reqs.iter().map(|r| client.chat(r)))
        .buffer_unordered(64)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
    let rps = n as f64 / t.elapsed().as_secs_f64();
    eprintln!("{rps:.0} requests/s");
    assert_eq!(ok, n);
    assert!(rps >= 2000.0, "{rps:.0} requests/s");
    server.shutdown().await;
}

/// A vLLM-like replica for the adapter calls: names it holds, a log of what it was asked,
/// 400 for a name it already holds and 404 for unloading one it does not.
#[derive(Default)]
struct LoraReplica {
    held: std::sync::Mutex<Vec<String>>,
    log: std::sync::Mutex<Vec<(String, serde_json::Value)>>,
}

async fn lora_replica() -> (String, Arc<LoraReplica>, tokio::task::JoinHandle<()>) {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use serde_json::{json, Value};
    async fn load(
        State(r): State<Arc<LoraReplica>>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::response::Response {
        r.log.lock().unwrap().push(("load".into(), body.clone()));
        let name = body["lora_name"].as_str().unwrap().to_string();
        let mut held = r.held.lock().unwrap();
        if held.contains(&name) || body["lora_path"] == json!("/missing") {
            return (StatusCode::BAD_REQUEST, format!("cannot load {name}")).into_response();
        }
        held.push(name);
        "ok".into_response()
    }
    async fn unload(
        State(r): State<Arc<LoraReplica>>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::response::Response {
        r.log.lock().unwrap().push(("unload".into(), body.clone()));
        let name = body["lora_name"].as_str().unwrap();
        let mut held = r.held.lock().unwrap();
        match held.iter().position(|h| h == name) {
            Some(i) => {
                held.remove(i);
                "ok".into_response()
            }
            None => (StatusCode::NOT_FOUND, "no such adapter").into_response(),
        }
    }
    async fn completions(axum::Json(req): axum::Json<Value>) -> axum::Json<Value> {
        for (key, want) in [
            ("logprobs", json!(1)),
            ("return_tokens_as_token_ids", json!(true)),
            ("skip_special_tokens", json!(false)),
            ("stop_token_ids", json!([2])),
            ("prompt", json!([1, 5, 9])),
        ] {
            assert_eq!(req[key], want, "{key} in {req}");
        }
        let n = req["n"].as_u64().unwrap() as usize;
        let choices: Vec<Value> = (0..n)
            .rev()
            .map(|i| {
                json!({"index": i, "text": "", "finish_reason": if i == 0 { "stop" } else { "length" },
                    "logprobs": {"tokens": [format!("token_id:{}", 10 + i), "token_id:2"],
                                 "token_logprobs": [-0.5, -0.25]}})
            })
            .collect();
        axum::Json(json!({"choices": choices}))
    }
    let state = Arc::new(LoraReplica::default());
    let app = Router::new()
        .route("/v1/load_lora_adapter", post(load))
        .route("/v1/unload_lora_adapter", post(unload))
        .route("/v1/completions", post(completions))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, state, task)
}

#[tokio::test]
async fn lora_adapters_reach_every_replica() {
    let (a_url, a, a_task) = lora_replica().await;
    let (b_url, b, b_task) = lora_replica().await;
    let client = Client::new(
        vec![Endpoint::new(&a_url), Endpoint::new(&b_url)],
        fast_policy(),
    )
    .unwrap();
    client
        .load_lora_adapter("p-step0", "/ads/step-0")
        .await
        .unwrap();
    for r in [&a, &b] {
        assert_eq!(*r.held.lock().unwrap(), vec!["p-step0"]);
        assert_eq!(
            r.log.lock().unwrap()[0].1,
            serde_json::json!({"lora_name": "p-step0", "lora_path": "/ads/step-0"})
        );
    }
    // A name one replica still holds (an interrupted run) is replaced there.
    b.held.lock().unwrap().push("p-step1".into());
    client
        .load_lora_adapter("p-step1", "/ads/step-1")
        .await
        .unwrap();
    let ops = |r: &LoraReplica| -> Vec<String> {
        r.log
            .lock()
            .unwrap()
            .iter()
            .map(|(op, _)| op.clone())
            .collect()
    };
    assert_eq!(ops(&a), vec!["load", "load"]);
    assert_eq!(ops(&b), vec!["load", "load", "unload", "load"]);
    assert_eq!(*b.held.lock().unwrap(), vec!["p-step0", "p-step1"]);

    // Unloading: from every replica; one that does not hold the name is fine.
    a.held.lock().unwrap().retain(|h| h != "p-step0");
    client.unload_lora_adapter("p-step0").await.unwrap();
    assert_eq!(*a.held.lock().unwrap(), vec!["p-step1"]);
    assert_eq!(*b.held.lock().unwrap(), vec!["p-step1"]);

    // A load that fails for another reason is an error naming the replica's URL.
    let err = client
        .load_lora_adapter("p-step2", "/missing")
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), Some(400));
    let msg = err.to_string();
    assert!(
        msg.contains("/v1/load_lora_adapter") && msg.contains("cannot load p-step2"),
        "{msg}"
    );

    // Token-level completions: ids, log-probabilities and finish reasons in index order.
    let resp = client
        .token_completions(&TokenCompletionRequest {
            model: "p-step1".into(),
            prompt: vec![1, 5, 9],
            n: 2,
            temperature: 0.9,
            top_p: 1.0,
            max_tokens: 8,
            seed: Some(11),
            stop_token_ids: vec![2],
        })
        .await
        .unwrap();
    assert_eq!(resp.choices.len(), 2);
    assert_eq!(resp.choices[0].ids, vec![10, 2]);
    assert_eq!(resp.choices[1].ids, vec![11, 2]);
    assert_eq!(resp.choices[1].logprobs, vec![-0.5, -0.25]);
    assert_eq!(resp.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(resp.choices[1].finish_reason.as_deref(), Some("length"));
    a_task.abort();
    b_task.abort();
}
