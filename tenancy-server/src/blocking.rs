//! `TokioBlocking`: the registry's [`BlockingRunner`] on tokio's blocking
//! pool, so every bcrypt hash and verify (authentication, create, rotate,
//! the admin token) runs off the async workers.

use futures::future::BoxFuture;
use tenancy_state::BlockingRunner;

/// Runs the registry's CPU-heavy jobs with `tokio::task::spawn_blocking`
/// (inline when there is no tokio runtime). Build a server's registry with
/// `StoreRegistry::new(backend).with_blocking(Arc::new(TokioBlocking))`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioBlocking;

impl BlockingRunner for TokioBlocking {
    fn run(&self, job: Box<dyn FnOnce() + Send + 'static>) -> BoxFuture<'static, ()> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => Box::pin(async move {
                // A job that panicked simply did not answer: the registry
                // counts a dropped job as a failed verify, never a pass.
                let _ = handle.spawn_blocking(job).await;
            }),
            Err(_) => {
                job();
                Box::pin(async {})
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_calling_thread() {
        let caller = std::thread::current().id();
        let ran_on =
            tenancy_state::run_blocking(&TokioBlocking, || std::thread::current().id()).await;
        assert!(
            ran_on.is_some_and(|t| t != caller),
            "{ran_on:?} vs {caller:?}"
        );
    }
}
