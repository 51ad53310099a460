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
    }
    let out = Command::new(&exe).args(["--emit-acl", "nonsense"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mosquitto"),
        "the error lists the formats"
    );
}
