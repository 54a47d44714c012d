//! Configs at platform scale: 10 000 routes and 100 issuers, made by the
//! same generator the benches use (`benches/load/big_config.py`), load
//! through `jwtgate check`; hostile YAML is refused in jwtgate's words.

mod common;

use std::path::Path;
use std::process::Command;

use common::check;

/// `benches/load/big_config.py` with `args`.
fn generated(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/load/big_config.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs the config generator");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("the config is text")
}

#[test]
fn check_loads_ten_thousand_routes_and_a_hundred_issuers() {
    let yaml = generated(&["--issuers", "100", "--routes", "10000"]);
    let ran = check(&yaml);
    assert!(ran.success, "{}", ran.text());
    assert!(ran.stdout.contains("issuers (100):"), "{}", ran.stdout);
    assert!(ran.stdout.contains("routes (10000):"), "{}", ran.stdout);
    assert!(ran.stdout.contains("route-9999"), "{}", ran.stdout);
}

#[test]
fn check_refuses_an_alias_bomb_naming_the_limit() {
    // Nine levels of nine aliases each (387 420 489 nodes from a dozen
    // lines), in the one field that takes any YAML: an inline JWKS.
    let mut yaml = String::from(
        "issuers:\n  - name: x\n    issuer: https://x\n    algorithms: [RS256]\n    audiences: [api]\n    jwks:\n      a0: &a0 [x, x, x, x, x, x, x, x, x]\n",
    );
    for level in 1..10 {
        let previous = format!("*a{}", level - 1);
        let list = [previous.as_str(); 9].join(", ");
        yaml.push_str(&format!("      a{level}: &a{level} [{list}]\n"));
    }
    yaml.push_str("routes: []\n");
    let ran = check(&yaml);
    assert!(!ran.success);
    assert!(
        ran.stderr.contains(
            "more YAML anchors, aliases or alias expansions than a config needs (an alias bomb?)"
        ),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("budget breached"), "{}", ran.stderr);
}
