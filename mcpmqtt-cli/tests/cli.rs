//! The `mcpmqtt` command line against a Mosquitto that enforces the
//! generated ACL: listing, describing, calling (with live partials), each
//! error's exit code, ACL rendering, and the connection variables.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use mcpmqtt::acl::AclFormat;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread")]
async fn tools_servers_and_describe() {
    let broker = broker();
    let lab = online(&broker, "lab", lab()).await;

    let (code, table, err) = parts(&output(mcpmqtt(&broker, "tester").arg("tools")).await);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(lines[0].starts_with("TOOL"), "{table}");
    for header in ["SERVER", "STREAMING", "ALLOWED CALLERS", "DESCRIPTION"] {
        assert!(lines[0].contains(header), "{table}");
    }
    let count = lines.iter().find(|l| l.starts_with("count ")).expect("count listed");
    assert!(count.contains(" lab ") && count.contains(" yes ") && count.contains("tester, bridge"));
    assert!(count.ends_with("Streams n ticks."), "{count}");
    let echo_row = lines.iter().find(|l| l.starts_with("echo ")).expect("echo listed");
    assert!(
        echo_row.contains(" no ") && echo_row.ends_with("Echo — Returns its text."),
        "{echo_row}"
    );
    let tool_names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(tool_names, ["count", "echo", "refuse", "secret", "sleepy"]);

    // Filters: by name prefix, by server.
    let (code, table, err) = parts(&output(mcpmqtt(&broker, "tester").args(["tools", "--prefix", "s"])).await);
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["secret", "sleepy"]);
    let (code, table, _) = parts(&output(mcpmqtt(&broker, "tester").args(["tools", "--server", "lab"])).await);
    assert_eq!(code, 0);
    assert_eq!(table.lines().count(), 6, "{table}");
    let (code, table, _) = parts(&output(mcpmqtt(&broker, "tester").args(["tools", "--server", "elsewhere"])).await);
    assert_eq!(code, 0);
    assert_eq!(table.lines().filter(|l| l.starts_with("echo")).count(), 0, "{table}");

    let (code, json_out, _) = parts(&output(mcpmqtt(&broker, "tester").args(["tools", "--json"])).await);
    assert_eq!(code, 0);
    let cards: Vec<Value> = serde_json::from_str(&json_out).unwrap();
    assert_eq!(cards.len(), 5);
    assert_eq!(cards[1]["tool"], "echo");
    assert_eq!(cards[1]["input_schema"], *echo().input_schema());

    let (code, servers, _) = parts(&output(mcpmqtt(&broker, "tester").arg("servers")).await);
    assert_eq!(code, 0);
    assert!(servers.starts_with("SERVER"), "{servers}");
    let row = servers.lines().nth(1).expect("one server");
    assert!(row.starts_with("lab ") && row.contains(" 5 "), "{row}");
    assert!(row.contains("echo, count, refuse, sleepy, secret"), "{row}");

    let (code, text, _) = parts(&output(mcpmqtt(&broker, "tester").args(["describe", "echo"])).await);
    assert_eq!(code, 0);
    for expected in [
        "tool:            echo",
        "server:          lab",
        "title:           Echo",
        "allowed callers: tester, bridge",
        "hints:           read-only, idempotent, closed world",
        "streaming:       no",
        "  text (string, required): What to send back.",
        "input schema:",
        "output schema:",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }
    let schema_start = text.find("input schema:\n").unwrap() + "input schema:\n".len();
    let schema_end = text.find("\n\noutput schema:").unwrap();
    let schema: Value = serde_json::from_str(&text[schema_start..schema_end]).unwrap();
    assert_eq!(schema, *echo().input_schema());

    let (code, card, _) = parts(&output(mcpmqtt(&broker, "tester").args(["describe", "count", "--json"])).await);
    assert_eq!(code, 0);
    let card: Value = serde_json::from_str(&card).unwrap();
    assert_eq!(card["supports_streaming"], true);
    assert_eq!(card["server"], "lab");
    assert!(
        card.get("title").is_none() && card.get("annotations").is_none(),
        "{card}"
    );
    let (code, card, _) = parts(&output(mcpmqtt(&broker, "tester").args(["describe", "echo", "--json"])).await);
    assert_eq!(code, 0);
    let card: Value = serde_json::from_str(&card).unwrap();
    assert_eq!(card["title"], "Echo");
    assert_eq!(
        card["annotations"],
        json!({"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false})
    );

    let (code, _, err) = parts(&output(mcpmqtt(&broker, "tester").args(["describe", "nosuch"])).await);
    assert_eq!(code, 14, "{err}");
    assert!(err.contains("no tool `nosuch`"), "{err}");
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn call_prints_the_result_as_json() {
    let broker = broker();
    let lab = online(&broker, "lab", lab()).await;

    let (code, out, err) =
        parts(&output(mcpmqtt(&broker, "tester").args(["call", "echo", "--arg", "text=hi there"])).await);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"echo": "hi there"})
    );

    let (code, out, err) =
        parts(&output(mcpmqtt(&broker, "tester").args(["call", "echo", "--json", r#"{"text": "from json"}"#])).await);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"echo": "from json"})
    );

    // --json from stdin, with an --arg on top; a quoted number stays a string.
    let mut cmd = mcpmqtt(&broker, "tester");
    cmd.args(["call", "echo", "--json", "-", "--arg", r#"text="42""#])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(br#"{"text": "overridden"}"#).await.unwrap();
    }
    let (code, out, err) = parts(&child.wait_with_output().await.unwrap());
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"echo": "42"}));
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_partials_print_live_as_json_lines_on_stderr() {
    let broker = broker();
    let lab = online(&broker, "lab", lab()).await;

    let mut child = mcpmqtt(&broker, "tester")
        .args(["call", "count", "--arg", "n=3", "--arg", "delay_ms=400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(PATIENCE, stderr.next_line())
        .await
        .expect("a partial in time")
        .unwrap()
        .expect("a line");
    assert_eq!(
        serde_json::from_str::<Value>(&first).unwrap(),
        json!({"partial": 0, "progress": 1.0, "total": 3.0, "content": "tick 0"})
    );
    // Live: the first partial is out while the call still runs.
    assert!(child.try_wait().unwrap().is_none(), "the call already ended");
    let mut rest = Vec::new();
    while let Some(line) = stderr.next_line().await.unwrap() {
        rest.push(serde_json::from_str::<Value>(&line).unwrap_or_else(|_| panic!("not JSON: {line}")));
    }
    assert_eq!(
        rest,
        [
            json!({"partial": 1, "progress": 2.0, "total": 3.0, "content": "tick 1"}),
            json!({"partial": 2, "progress": 3.0, "total": 3.0, "content": "tick 2"}),
            json!({"partial": 3, "data": {"done": 3}}),
        ]
    );
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!(3));
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_error_has_a_clear_message_and_its_own_exit_code() {
    let broker = broker();
    let lab = online(&broker, "lab", lab()).await;
    let call = |args: &[&str]| {
        let mut cmd = mcpmqtt(&broker, "tester");
        cmd.arg("call").args(args);
        cmd
    };
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["echo", "--arg", "text=1"],
            10,
            "error: invalid arguments: argument `text`",
        ),
        (vec!["echo", "--arg", "txt=hi"], 10, "error: invalid arguments:"),
        (
            vec!["secret"],
            11,
            "error: unauthorized: the broker refused the call to `secret`",
        ),
        (vec!["refuse"], 12, "error: tool error: refused on purpose (code nope)"),
        (vec!["sleepy"], 13, "error: timeout:"),
        (
            vec!["echo", "--arg", "text"],
            2,
            "error: --arg \"text\" is not KEY=VALUE",
        ),
        (vec!["echo", "--json", "{oops"], 2, "error: --json is not valid JSON"),
        (vec!["echo", "--json", "[1]"], 2, "must be a JSON object, not an array"),
        (
            vec!["echo", "--timeout", "0"],
            2,
            "--timeout 0 is not a positive number",
        ),
    ];
    for (args, want, message) in cases {
        let started = Instant::now();
        let (code, out, err) = parts(&output(&mut call(&args)).await);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {message:?} not in {err:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.is_empty(), "{args:?} printed {out:?}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }

    // A tool nobody hosts: the broker finds no subscriber.
    lab.shutdown().await.unwrap();
    let (code, _, err) = parts(&output(&mut call(&["echo", "--arg", "text=hi"])).await);
    assert_eq!(code, 14, "{err}");
    assert!(
        err.contains("error: unavailable: no server is subscribed to `echo`"),
        "{err}"
    );

    // A broker that is not there.
    let (code, _, err) = parts(&output(bare().args(["--broker", "mqtt://127.0.0.1:1", "tools"])).await);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("could not connect to the broker"), "{err}");

    // Bad flags: clap's usage error.
    let (code, _, err) = parts(&output(bare().args(["call"])).await);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = parts(&output(bare().args(["--broker", "http://x", "tools"])).await);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unsupported scheme `http`"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connection_comes_from_the_environment_too() {
    let broker = broker();
    let lab = online(&broker, "lab", lab()).await;
    let mut cmd = bare();
    cmd.args(["call", "echo", "--arg", "text=env"])
        .env("MQTT_URL", broker.url())
        .env("MCPMQTT_NAMESPACE", NS)
        .env("MQTT_USERNAME", "tester")
        .env("MQTT_PASSWORD", password("tester"))
        .env("MQTT_CLIENT_ID", "tester");
    let (code, out, err) = parts(&output(&mut cmd).await);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"echo": "env"}));

    // The wrong password: the broker refuses the connection.
    let mut cmd = bare();
    cmd.arg("tools")
        .env("MQTT_URL", broker.url())
        .env("MQTT_USERNAME", "tester")
        .env("MQTT_PASSWORD", "wrong");
    let (code, _, err) = parts(&output(&mut cmd).await);
    assert_eq!(code, 3, "{err}");

    // The help names every variable, and no password.
    let (code, help, _) = parts(&output(bare().arg("--help").env("MQTT_PASSWORD", "hunter2")).await);
    assert_eq!(code, 0);
    for var in CONNECTION_VARS {
        assert!(help.contains(var), "{var} not in --help");
    }
    assert!(!help.contains("hunter2"), "--help shows the password");
    assert!(help.contains("11  unauthorized"), "exit codes not in --help");
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_is_the_identity_without_a_password() {
    let pki = pki::Pki::new();
    let broker = pki.broker(&manifest());
    let lab = lab()
        .adopt_orphaned_sessions(false)
        .broker_options(pki.options(&broker, Some(&pki.client("lab"))))
        .build()
        .unwrap()
        .start()
        .await
        .expect("lab starts with its certificate");
    let (cert, key) = pki.write_identity("tester", &pki.client("tester"));
    let url = pki.url(&broker);
    let ca = pki.path("ca.pem");
    let with_cert = |args: &[&str]| {
        let mut cmd = bare();
        cmd.args(["--broker", &url, "--namespace", NS, "--ca", &ca])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(args);
        cmd
    };
    // The certificate's CN, tester, is the identity: no username, no password.
    let (code, out, err) = parts(&output(&mut with_cert(&["call", "echo", "--arg", "text=cert"])).await);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"echo": "cert"}));
    let (code, _, err) = parts(&output(&mut with_cert(&["call", "secret"])).await);
    assert_eq!(code, 11, "tester's certificate is refused operator's tool: {err}");
    // A username that is not the certificate's CN: both named, before connecting.
    let (code, _, err) = parts(&output(&mut with_cert(&["--username", "operator", "call", "secret"])).await);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"operator\"") && err.contains("\"tester\""), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    // The same from the environment.
    let mut cmd = bare();
    cmd.args(["call", "echo", "--arg", "text=env"])
        .env("MQTT_URL", &url)
        .env("MCPMQTT_NAMESPACE", NS)
        .env("MQTT_CA", &ca)
        .env("MQTT_CERT", &cert)
        .env("MQTT_KEY", &key);
    let (code, out, err) = parts(&output(&mut cmd).await);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"echo": "env"}));
    // --cert without --key.
    let mut cmd = bare();
    cmd.args(["--broker", &url, "--cert"]).arg(&cert).args(["call", "echo"]);
    let (code, _, err) = parts(&output(&mut cmd).await);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--cert needs --key"), "{err}");
    lab.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn acl_renders_and_merges_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let m = |b: mcpmqtt::ServerBuilder| b.build().unwrap().acl_manifest();
    let (lab, lab2) = (m(lab()), m(lab2()));
    let lab_file = dir.path().join("lab.json");
    let lab2_file = dir.path().join("lab2.json");
    std::fs::write(&lab_file, lab.render(AclFormat::Manifest)).unwrap();
    std::fs::write(&lab2_file, lab2.render(AclFormat::Manifest)).unwrap();

    for format in AclFormat::ALL {
        let (code, out, err) = parts(&output(bare().args(["acl", "--format", format.name()]).arg(&lab_file)).await);
        assert_eq!(code, 0, "{format}: {err}");
        assert_eq!(out, lab.render(*format), "{format}");
        // Beside the ACL, the broker settings that make a client certificate
        // the identity: in the file's comments, else on stderr.
        assert_eq!(
            err,
            format.certificate_settings_aside().unwrap_or_default(),
            "{format}: stderr"
        );
    }
    let (code, out, _) = parts(
        &output(
            bare()
                .args(["acl", "--format", "mosquitto"])
                .arg(&lab_file)
                .arg(&lab2_file),
        )
        .await,
    );
    assert_eq!(code, 0);
    assert_eq!(out, manifest().render(AclFormat::Mosquitto));

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"not\": \"a manifest\"}").unwrap();
    let (code, _, err) = parts(&output(bare().args(["acl", "--format", "emqx"]).arg(&bad)).await);
    assert_eq!(code, 2);
    assert!(err.contains("is not an ACL manifest"), "{err}");
    let (code, _, err) = parts(&output(bare().args(["acl", "--format", "emqx"]).arg(dir.path().join("missing"))).await);
    assert_eq!(code, 2);
    assert!(err.contains("could not read the manifest"), "{err}");
    let (code, _, err) = parts(&output(bare().args(["acl", "--format", "nginx"]).arg(&lab_file)).await);
    assert_eq!(code, 2);
    assert!(err.contains("unknown ACL format"), "{err}");
}
