//! Fault injection for the crash tests.

/// Test hook: the process aborts (as if killed) when it reaches the step named by the
/// `SKEIN_KILL_AT` environment variable, so that tests can stop a node between any two steps
/// of a flush or a rewrite.
pub(crate) fn kill_point(step: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("SKEIN_KILL_AT").ok())
        .as_deref()
        == Some(step)
    {
        eprintln!("SKEIN_KILL_AT={step}: aborting");
        std::process::abort();
    }
}
