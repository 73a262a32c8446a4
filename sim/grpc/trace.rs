//! The run's trace, shared by the tasks that add to it. Its hash is what the determinism test
//! compares; with `print` the lines go to stdout as they happen.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

use super::super::trace::Trace;

#[derive(Clone)]
pub struct SharedTrace(Arc<Mutex<Trace>>);

impl SharedTrace {
    pub fn new(print: bool) -> Self {
        SharedTrace(Arc::new(Mutex::new(Trace::new(print))))
    }

    fn lock(&self) -> MutexGuard<'_, Trace> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn note(&self, at_ms: u64, what: &str) {
        self.lock().note(at_ms, what);
    }

    pub fn record(&self, at_ms: u64, ev: &impl Debug) {
        self.lock().record(at_ms, ev);
    }

    pub fn hash(&self) -> u64 {
        self.lock().hash()
    }

    pub fn events(&self) -> u64 {
        self.lock().events
    }
}
