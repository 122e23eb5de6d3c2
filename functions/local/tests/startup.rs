//! Start-up refuses a bad configuration: the built server exits non-zero before serving, with a
//! message that names the variable and the values it accepts.

use std::process::Command;

fn start_with(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zaqar-local"));
    // Nothing may reach a real endpoint or port even if validation were to pass.
    cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:1").env("PORT", "1").env("ZAQAR_STREAM_POLLER", "false");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the zaqar-local binary runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn unknown_auth_mode_stops_start_up() {
    let (code, stderr) = start_with(&[("ZAQAR_AUTH_MODE", "bogus")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(r#"invalid ZAQAR_AUTH_MODE="bogus": expected one of none, jwt, iam"#), "stderr: {stderr}");
}

#[test]
fn malformed_number_and_flag_stop_start_up() {
    for (name, value, expected) in [
        ("ZAQAR_DEFAULT_CLAIM_TTL", "abc", "an integer from 60 to 43200"),
        ("ZAQAR_ADMIN_MODE", "ja", "one of true, false"),
        ("ZAQAR_FANOUT_BUDGET_MS", "-5", "an integer from 1 to 900000"),
        ("ZAQAR_LOCAL_ONE_THREAD", "maybe", "one of true, false"),
    ] {
        let (code, stderr) = start_with(&[(name, value)]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(stderr.contains(&format!("invalid {name}={value:?}: expected {expected}")), "{name}: {stderr}");
    }
}
