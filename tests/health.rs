//! `jwtgate health`, the container image's HEALTHCHECK, against real
//! gateways: exit 0 when the admin listener says ready, 1 with the reason
//! when it says not ready or nobody answers.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Config, Gateway, ISS, OPEN_ROUTE, Ran, Upstream};

/// `jwtgate health ARGS` with `env`, and nothing of the developer's
/// environment that would change where it asks.
fn health(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let output = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .arg("health")
        .args(args)
        .env_remove("JWTGATE_ADMIN")
        .envs(env.iter().copied())
        .output()
        .expect("run jwtgate health");
    Ran {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn health_is_0_while_the_gateway_is_ready_and_1_once_it_is_gone() {
    let upstream = Upstream::start();
    let mut gateway = Gateway::start(&Config::main(ISS).routes(OPEN_ROUTE), &upstream).await;
    let admin = gateway.admin_addr().to_string();

    let ran = health(&["--admin", &admin], &[]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout.contains("/readyz") && ran.stdout.contains("200"),
        "{ran:?}"
    );

    // In the image it takes the address from the variable the config binds
    // the admin listener with; an every-interface address is asked on
    // loopback.
    let every_interface = format!("0.0.0.0:{}", gateway.admin_addr().port());
    let ran = health(&[], &[("JWTGATE_ADMIN", &every_interface)]);
    assert_eq!(ran.code, Some(0), "{ran:?}");

    gateway.signal("KILL");
    gateway
        .wait_for_exit(Duration::from_secs(30))
        .await
        .expect("killed");
    let ran = health(&["--admin", &admin], &[]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("cannot reach the admin listener"),
        "{ran:?}"
    );
}

#[tokio::test]
async fn health_is_1_naming_the_issuer_without_keys_and_live_is_0() {
    // A required issuer whose keys never arrive: the process serves, but is
    // not ready.
    let config = Config::new().issuers(&format!(
        r#"
  - name: unreachable
    issuer: https://unreachable.test
    algorithms: [RS256]
    audiences: [api]
    jwks_uri: http://{}/jwks
    fetch: {{ allow_http: true, connect_timeout: 200ms, timeout: 500ms }}
"#,
        common::closed_addr()
    ));
    let upstream = Upstream::start();
    let gateway = Gateway::start(&config.routes(OPEN_ROUTE), &upstream).await;
    let admin = gateway.admin_addr().to_string();

    let ran = health(&["--admin", &admin], &[]);
    assert_eq!(ran.code, Some(1), "{ran:?}\nlog:\n{}", gateway.log());
    assert!(ran.stderr.contains("503"), "{ran:?}");
    assert!(ran.stderr.contains("unreachable"), "{ran:?}");

    let ran = health(&["--admin", &admin, "--live"], &[]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.contains("/healthz"), "{ran:?}");
}
