//! Start-up and command-line behaviour a new user meets first: a busy port, a closed pipe.

use std::process::{Command, Stdio};

use workspace::config::Config;
use workspace::runner::sandbox::SandboxMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_names_the_address_and_setting_and_creates_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config =
        Config::for_tests(&data, crate::support::runner_exe(), SandboxMode::Bubblewrap);
    config.listen = addr;
    let Err(err) = workspace::app::Server::bind(config).await else {
        panic!("bound a port that is taken");
    };
    let message = err.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(
        message.contains("PORT") && message.contains("--port"),
        "{message}"
    );
    assert!(
        !data.exists(),
        "the data dir was created before the bind failed"
    );
}

#[test]
fn replay_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // A pipe whose reader is gone before the replay writes: what `| head -1` leaves behind.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = Command::new(crate::support::runner_exe())
        .args(["replay", "--events", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("replay runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
}
