//! The daemon booted in-process, as a library function (`corral_api::daemon::run`), driven
//! through `corral-proto`'s client only — what a program embedding corral, or a test, does.
//! (nextest runs each test in its own process, so the supervisor may make this one a
//! subreaper and handle its signals.)

use std::time::{Duration, Instant};

use corral_proto::wire::{self, UnitState};
use corral_proto::{Client, Method};

use crate::harness::*;

const STACK: &str = r#"
[services.db]
command = ["sleep", "1000"]

[services.api]
command = "echo api-up; exec sleep 1000"
depends_on = ["db"]
"#;

async fn services(c: &Client) -> Vec<wire::Service> {
    c.call(Method::GET, "/v1/services").await.unwrap()
}

#[test]
fn the_daemon_runs_in_process_and_speaks_proto() {
    let p = Project::new(STACK);
    let project = corral_config::load(&p.path().join("corral.toml")).unwrap();
    let state_dir = project.state_dir.clone();
    let options = corral_runtime::Options {
        stay: true,
        quiet: true,
        exe: env!("CARGO_BIN_EXE_corral").into(),
        ..Default::default()
    };
    let serve = corral_api::daemon::Serve {
        api: true,
        listen: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async move {
        let daemon = tokio::spawn(corral_api::daemon::run(project, options, serve));
        let c = Client::new(&state_dir);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(list) = c
                .call::<Vec<wire::Service>>(Method::GET, "/v1/services")
                .await
                && list
                    .iter()
                    .all(|s| s.state == UnitState::Running && s.ready)
            {
                break;
            }
            assert!(Instant::now() < deadline, "the stack did not come up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = services(&c).await;
        let api_pid = before.iter().find(|s| s.name == "api").unwrap().pid;
        // A ticket: answered once api runs again, with a new process.
        let done: wire::Done = c
            .call(Method::POST, "/v1/services/api/restart?wait=true")
            .await
            .unwrap();
        assert_eq!(done.message, "api: running");
        let after = services(&c).await;
        let api = after.iter().find(|s| s.name == "api").unwrap();
        assert_eq!(api.state, UnitState::Running);
        assert_ne!(api.pid, api_pid);
        // Typed errors: an unknown unit is a 404 with a stable code.
        match c
            .call::<wire::Done>(Method::POST, "/v1/services/nope/stop")
            .await
        {
            Err(corral_proto::ClientError::Api { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (404, "unknown_service"));
            }
            other => panic!("{other:?}"),
        }
        let _: wire::Done = c.call(Method::POST, "/v1/shutdown").await.unwrap();
        tokio::time::timeout(Duration::from_secs(15), daemon)
            .await
            .expect("the daemon ends after /v1/shutdown")
            .unwrap()
            .unwrap()
    });
    assert!(!outcome.interrupted);
    assert!(
        outcome.units.iter().all(|u| !u.state.is_live()),
        "{:?}",
        outcome.units
    );
    assert!(!p.path().join(".corral/daemon.pid").exists());
    p.assert_nothing_left();
}
