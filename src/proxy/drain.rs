//! Draining before a graceful upgrade hands over: from the moment the old process sends its
//! listening sockets to the new one (SIGQUIT), it keeps serving for pingora's close timeout
//! (5 s) and then drops the keep-alive connections that sit idle. A client that sends its next
//! request on such a connection just as it is dropped gets a reset for a request nobody read. So
//! while draining, every answer says `Connection: close`: clients open a fresh connection, which
//! the shared listening socket may give to either process, and by the time the old one stops,
//! the connections it still has are in the middle of a request it finishes.
//!
//! `DrainWatch` follows pingora's execution phases and raises the flag the proxy reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::broadcast::{self, error::RecvError};

/// Raised once the process is handing over or terminating.
#[derive(Debug, Default, Clone)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Raises `draining` when pingora starts a graceful upgrade or termination.
pub struct DrainWatch {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    draining: Draining,
}

impl DrainWatch {
    /// `phases` from `Server::watch_execution_phase`, taken before the server runs.
    pub fn new(phases: broadcast::Receiver<ExecutionPhase>, draining: Draining) -> Self {
        DrainWatch {
            phases: Mutex::new(Some(phases)),
            draining,
        }
    }
}

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().expect("not poisoned").take() else {
            return;
        };
        loop {
            let phase = tokio::select! {
                _ = shutdown.changed() => {
                    self.draining.set();
                    return;
                }
                p = phases.recv() => p,
            };
            match phase {
                Ok(
                    ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulUpgradeCloseTimeout
                    | ExecutionPhase::GracefulTerminate,
                ) => {
                    tracing::info!("draining: answers close their connections from now on");
                    self.draining.set();
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }
}
