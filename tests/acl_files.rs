//! The example's ACL files under `examples/acl/` match the tools'
//! annotations. Regenerate them with `MCPMQTT_ACL=overwrite cargo test`.

use std::path::Path;
use std::process::Command;

mod support;

#[test]
fn the_examples_acl_files_are_current() {
    let manifest = gtm_tools::gtm_server().build().unwrap().acl_manifest();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/acl");
    if let Err(stale) = mcpmqtt::acl::check_acl_files(&manifest, &dir) {
        panic!("{stale}");
    }
    let conf = mcpmqtt::acl::mosquitto_conf("/etc/mosquitto/mcp.acl", "/etc/mosquitto/passwd");
    let conf_path = dir.join("mosquitto.conf");
    if std::env::var(mcpmqtt::acl::OVERWRITE_ENV).is_ok_and(|v| v == "overwrite") {
        std::fs::write(&conf_path, &conf).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&conf_path).ok().as_deref(),
        Some(conf.as_str()),
        "examples/acl/mosquitto.conf is stale: MCPMQTT_ACL=overwrite cargo test"
    );
}

#[test]
fn every_server_has_the_emit_acl_flag() {
    let exe = support::example_path("gtm_server");
    for format in mcpmqtt::acl::AclFormat::ALL {
        // No broker runs on this port: the flag must not connect.
        let out = Command::new(&exe)
            .args(["--broker", "mqtt://127.0.0.1:9", "--emit-acl", format.name()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "--emit-acl {format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = gtm_tools::gtm_server().build().unwrap().acl_manifest();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            manifest.render(*format),
            "--emit-acl {format}"
        );
        // Beside the ACL, the broker settings that make a client certificate
        // the identity: in the file's comments, else on stderr.
        assert_eq!(
            String::from_utf8(out.stderr).unwrap(),
            format.certificate_settings_aside().unwrap_or_default(),
            "--emit-acl {format}: stderr"
        );
    }
    let out = Command::new(&exe).args(["--emit-acl", "nonsense"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mosquitto"), "the error lists the formats: {stderr}");
    // One clean line: the Display form, and nothing claiming to serve.
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("gtm_server: unknown ACL format \"nonsense\""),
        "{stderr}"
    );
    assert!(!stderr.contains("InvalidArgument"), "not the Debug form: {stderr}");
}

#[test]
fn the_examples_errors_are_one_line_in_their_display_form() {
    // No broker on this port: the connection fails, and says so once.
    for example in ["gtm_server", "scout"] {
        let out = Command::new(support::example_path(example))
            .args(["--broker", "mqtt://127.0.0.1:9"])
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{example}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("{example}: could not connect to the broker")),
            "{example}: {stderr}"
        );
        assert!(
            !stderr.contains("Connect(\""),
            "{example}: not the Debug form: {stderr}"
        );
    }
    // A certificate whose CN is not the identity: both named, in one line.
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "scout");
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("scout.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("scout.key"), key.serialize_pem()).unwrap();
    let out = Command::new(support::example_path("gtm_server"))
        .args(["--broker", "mqtts://127.0.0.1:9", "--ca"])
        .arg(dir.path().join("scout.pem"))
        .env("MQTT_CERT", dir.path().join("scout.pem"))
        .env("MQTT_KEY", dir.path().join("scout.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "gtm_server: the server's identity \"gtm-mcp-server\" differs from its client certificate's CN \"scout\""
        ),
        "{stderr}"
    );
}
