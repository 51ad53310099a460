//! The CPU of one call without a broker: what the client and the server do
//! to a call's bytes, at 100 B, 10 KiB and 1 MB of arguments, so that a
//! change's effect shows without the noise of three processes on two cores.
//!
//! - `client_encode`: the call request's JSON, as `Client::call` makes it;
//! - `server`: the server's whole path: decode the request and resolve its
//!   reply address, check the arguments against the schema, run the `echo`
//!   handler (it returns its arguments), encode the response;
//! - `server_validate`: the part of `server` that checks the arguments
//!   against the tool's input schema;
//! - `client_decode`: the response read back, as the client reads it;
//! - `serde_json_encode`: the same request through `serde_json::to_vec`, the
//!   reference the runtime's own encoder is measured against;
//! - `copy_10k`: 10 KiB copied 7 bytes past its source (modulo 4096, as a
//!   payload after a JSON prefix can be) by `memcpy` and by the runtime's
//!   copy: glibc's `rep movsb` is some 30 times slower there on AMD Zen.
//!
//! One call per sample: divan keeps a sample's results alive until the sample
//! ends, and hundreds of 10 KiB results held at once measured the allocator's
//! cold memory more than the code (a decode read 5.3 µs at 100 calls a
//! sample, 0.6 µs at one).
//!
//! `cargo bench -p mcpmqtt --bench hot_path`

use divan::{black_box, Bencher};
use mcpmqtt::__private::codec::{copy, decode_response, encode_request};
use mcpmqtt::__private::CallPath;
use mcpmqtt::{CallContext, CallRequest, CallResponse, ToolDef, ToolError};
use serde_json::{json, Value};

fn main() {
    divan::main();
}

/// Sizes of the arguments JSON, as in `examples/bench.rs`.
const SIZES: &[usize] = &[100, 10 * 1024, 1_000_000];

/// The arguments JSON of one call, `size` bytes long: `{"text":"xxx..."}`.
fn arguments(size: usize) -> Value {
    json!({ "text": "x".repeat(size.saturating_sub(11)) })
}

fn echo() -> ToolDef {
    ToolDef::builder("echo")
        .description("Returns its arguments.")
        .input_schema(json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "Anything."}},
            "required": ["text"]
        }))
        .handler(|_ctx, args| async move { Ok::<_, ToolError>(args) })
        .build()
        .expect("a valid tool")
}

fn request(size: usize) -> CallRequest {
    CallRequest {
        call_id: "7b0c6f5e-4a43-4bb8-9d8c-2f1d1a6b9e01".into(),
        arguments: arguments(size),
        client: "scout".into(),
        timestamp: Some("2026-12-01T08:00:00.000Z".into()),
        response_topic: Some("bench/mcp/clients/scout/responses".into()),
        private_stream: true,
    }
}

#[divan::bench(args = SIZES, sample_size = 1, sample_count = 2000)]
fn client_encode(bencher: Bencher, size: usize) {
    let request = request(size);
    bencher
        .counter(divan::counter::BytesCount::new(size))
        .bench(|| encode_request(black_box(&request), size));
}

#[divan::bench(args = SIZES, sample_size = 1, sample_count = 2000)]
fn server(bencher: Bencher, size: usize) {
    let path = CallPath::new(echo(), 2 * 1024 * 1024).expect("the path");
    let topic = path.call_topic(Some("scout"));
    let payload = encode_request(&request(size), size);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let handler = path.handler().clone();
    let (ctx, _partials) = CallContext::for_test("echo", "scout");
    bencher.counter(divan::counter::BytesCount::new(size)).bench_local(|| {
        let (request, _reply) = path
            .decode(
                &topic,
                black_box(&payload),
                Some("bench/mcp/clients/scout/responses"),
                Some(b"c0ffee"),
            )
            .expect("a valid call");
        let result = runtime
            .block_on(handler(ctx.clone(), request.arguments))
            .expect("echo succeeds");
        path.encode_response(&CallResponse::ok(request.call_id, result, 0), payload.len())
    });
}

/// The schema check alone, a part of `server`: what a server that trusted
/// its callers' arguments would save.
#[divan::bench(args = SIZES, sample_size = 1, sample_count = 2000)]
fn server_validate(bencher: Bencher, size: usize) {
    let path = CallPath::new(echo(), 2 * 1024 * 1024).expect("the path");
    let mut args = arguments(size);
    bencher
        .counter(divan::counter::BytesCount::new(size))
        .bench_local(|| path.check(black_box(&mut args)).expect("valid arguments"));
}

#[divan::bench(args = SIZES, sample_size = 1, sample_count = 2000)]
fn client_decode(bencher: Bencher, size: usize) {
    let path = CallPath::new(echo(), 2 * 1024 * 1024).expect("the path");
    let response = CallResponse::ok(request(size).call_id, arguments(size), 1);
    let payload = path.encode_response(&response, size);
    bencher
        .counter(divan::counter::BytesCount::new(size))
        .bench(|| decode_response(black_box(&payload)).expect("a valid response"));
}

#[divan::bench(args = SIZES, sample_size = 1, sample_count = 2000)]
fn serde_json_encode(bencher: Bencher, size: usize) {
    let request = request(size);
    bencher
        .counter(divan::counter::BytesCount::new(size))
        .bench(|| serde_json::to_vec(black_box(&request)).expect("serialisable"));
}

#[divan::bench(args = ["memcpy", "runtime"], sample_size = 1, sample_count = 2000)]
fn copy_10k(bencher: Bencher, how: &str) {
    const LEN: usize = 10 * 1024;
    // One page-aligned buffer: the destination 7 bytes past the source,
    // modulo 4096.
    let mut buf = vec![1u8; 5 * 4096 + LEN];
    let base = buf.as_ptr().align_offset(4096);
    let (src_at, dst_at) = (base, base + 3 * 4096 + 7);
    let (head, tail) = buf.split_at_mut(dst_at);
    let src = &head[src_at..src_at + LEN];
    let dst = &mut tail[..LEN];
    let runtime = how == "runtime";
    bencher.counter(divan::counter::BytesCount::new(LEN)).bench_local(|| {
        if runtime {
            copy(black_box(&mut *dst), black_box(src));
        } else {
            black_box(&mut *dst).copy_from_slice(black_box(src));
        }
    });
}
