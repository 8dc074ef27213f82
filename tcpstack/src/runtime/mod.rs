//! The tokio driver and the user-facing API shaped like `tokio::net`.
