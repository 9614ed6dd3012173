//! The server against the official `openai` Python client: starts the server in-process on a
//! random loopback port with the tiny Llama-3.1 fixture and runs `openai_client.py`, which
//! exercises chat (plain and streaming, with usage), reasoning fields, completions, the model
//! list and error mapping. Needs `python3` with the `openai` package (`pip install openai`);
//! `METIS_PYTHON` overrides the interpreter.

mod common;

use std::process::Command;

fn python() -> String {
    std::env::var("METIS_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn official_openai_client_works_against_the_server() {
    let py = python();
    let probe = Command::new(&py).args(["-c", "import openai"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the Python package `openai` is missing for {py}: run `pip install openai` \
             (or set METIS_PYTHON to an interpreter that has it)\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run {py} ({e}): install Python 3 and `pip install openai`"),
    }
    let server = common::start(common::config()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let base = format!("http://{}/v1", server.addr);
    let model = server.model_name().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script)
            .env("METIS_BASE_URL", base)
            .env("METIS_MODEL", model)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "openai_client.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ALL OK"), "{stdout}");
    server.shutdown().await.unwrap();
}
