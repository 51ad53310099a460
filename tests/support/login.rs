//! Servers and clients on a test broker, anonymous or logged in with a
//! password. Shared with the CLI's tests, which include this file by path:
//! it needs only `mcpmqtt` and the Mosquitto harness (no `gtm_tools`, no rumqttc).

use std::time::Duration;

use mcpmqtt::{Client, ClientBuilder, ServerBuilder, ServerHandle};

use super::mosquitto::Mosquitto;

/// How long a test waits for anything that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// `server`, online on `broker`.
pub async fn online(broker: &Mosquitto, server: ServerBuilder) -> ServerHandle {
    start(server.broker(&broker.url())).await
}

/// `server`, online on `broker`, logged in as `username`.
pub async fn logged_in_server(
    broker: &Mosquitto,
    server: ServerBuilder,
    username: &str,
    password: &str,
) -> ServerHandle {
    start(server.broker(&broker.url()).credentials(username, password)).await
}

async fn start(server: ServerBuilder) -> ServerHandle {
    server
        .build()
        .expect("the test server builds")
        .start()
        .await
        .expect("the test server starts")
}

/// A client of `namespace` on `broker` as `identity`, whose calls wait
/// [`PATIENCE`] by default; not connected yet, for a test that expects the
/// connection to fail, or adds to it.
pub fn client_builder(broker: &Mosquitto, namespace: &str, identity: &str) -> ClientBuilder {
    Client::builder(identity)
        .broker(&broker.url())
        .namespace(namespace)
        .default_timeout(PATIENCE)
}

/// An anonymous client of `namespace` on `broker`, as `identity`.
pub async fn client(broker: &Mosquitto, namespace: &str, identity: &str) -> Client {
    connect(client_builder(broker, namespace, identity)).await
}

/// A client of `namespace` on `broker`, logged in as `identity`.
pub async fn logged_in_client(broker: &Mosquitto, namespace: &str, identity: &str, password: &str) -> Client {
    connect(client_builder(broker, namespace, identity).password(password)).await
}

async fn connect(client: ClientBuilder) -> Client {
    client.connect().await.expect("the test client connects")
}
