//! Tools that return nothing: no return type, `()`, and `Result<(), E>`.
//! Their result is `null`, and they publish no output schema.
#![deny(warnings)]

use std::sync::atomic::{AtomicU32, Ordering};

use mcpmqtt::{tool, Tool, ToolError};

static TOUCHED: AtomicU32 = AtomicU32::new(0);

/// Records a touch.
#[tool]
async fn touch(times: u32) {
    TOUCHED.fetch_add(times, Ordering::SeqCst);
}

/// Records one touch, with an explicit `()`.
#[tool]
async fn touch_once() -> () {
    TOUCHED.fetch_add(1, Ordering::SeqCst);
}

/// Records a touch, or refuses zero.
#[tool]
async fn touch_checked(times: u32) -> Result<(), ToolError> {
    if times == 0 {
        return Err(ToolError::invalid_arguments("`times` must be positive"));
    }
    TOUCHED.fetch_add(times, Ordering::SeqCst);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    for def in [
        touch::definition(),
        touch_once::definition(),
        touch_checked::definition(),
    ] {
        assert_eq!(def.output_schema(), None, "{}", def.name());
    }
    assert_eq!(touch::definition().input_schema()["required"][0], "times");

    touch(2).await;
    touch_once().await;
    touch_checked(3).await.unwrap();
    assert_eq!(
        touch_checked(0).await.unwrap_err().message(),
        "`times` must be positive"
    );
    assert_eq!(TOUCHED.load(Ordering::SeqCst), 6);
}
